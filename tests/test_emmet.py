"""EMMET: equality-constrained batched ROME. One fact gives ROME's update; a batch meets every constraint."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing.emmet import equality_update
from workbench.editing.optimize import (
    as_matrix,
    build_batch,
    capture,
    context_prefixes,
    value_param,
)
from workbench.editing.rome import rank_one_update

SMALL = dict(layers=[1], samples=1500, n_prefixes=2, n_key_prefixes=3, steps=5, check_known=False, min_prob=0)


def test_equality_update_meets_the_constraints_and_is_rank_one_for_one_key():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(32, 32, generator=g, dtype=torch.float64)
    C = A @ A.T / 32 + 0.1 * torch.eye(32, dtype=torch.float64)
    K = torch.randn(32, 5, generator=g, dtype=torch.float64)
    D = torch.randn(8, 5, generator=g, dtype=torch.float64)
    solve = lambda X: torch.linalg.solve(C, X)
    dW = equality_update(K, D, solve)
    torch.testing.assert_close(dW @ K, D, atol=1e-9, rtol=0)
    # The least ‖ΔW‖_C update meeting them has ΔW C in the row span of Kᵀ (Lagrange condition).
    off_span = torch.eye(32, dtype=torch.float64) - K @ torch.linalg.pinv(K)
    assert float((dW @ C @ off_span).norm()) < 1e-9 * float((dW @ C).norm())
    one = equality_update(K[:, :1], D[:, :1], solve)
    torch.testing.assert_close(one, rank_one_update(None, K[:, 0], D[:, 0], solve=solve), atol=1e-12, rtol=0)


def test_emmet_with_one_fact_is_rome(tiny_gemma):
    fact = wb.bundled_facts()[0]
    rome = wb.edit(tiny_gemma, fact, method="rome", **SMALL)
    rome_after = {k: v.clone() for k, v in rome.after.items()}
    rome.revert()
    before = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    emmet = wb.edit(tiny_gemma, fact, method="emmet", **SMALL)
    try:
        assert set(emmet.after) == set(rome_after)
        for name in rome_after:
            a, b = rome_after[name].double(), emmet.after[name].double()
            assert float((a - b).norm()) <= 1e-5 * float((rome.before[name].double() - a).norm())
    finally:
        emmet.revert()
    assert all(torch.equal(before[k], v) for k, v in tiny_gemma.state_dict().items())


def test_emmet_batch_moves_every_key_by_its_delta_and_reverts(tiny_gemma):
    facts = wb.bundled_facts()[:4]
    before = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    h = wb.edit(tiny_gemma, facts, method="emmet", **SMALL)
    try:
        assert h.info["constraint_residual"] < 1e-6
        name, _ = value_param(tiny_gemma, 1)
        hook = tiny_gemma.roles.hook("ffn_keys", 1)
        kb = build_batch(tiny_gemma, facts, context_prefixes(tiny_gemma, 3), kl_prompt=None, with_targets=False)
        K = capture(tiny_gemma, kb, [hook])[hook].T
        moved = (as_matrix(tiny_gemma, h.after[name]).double() - as_matrix(tiny_gemma, h.before[name]).double()) @ K
        norms = moved.norm(dim=0)
        want = torch.tensor([f["delta_norm"] for f in h.info["facts"]], dtype=torch.float64)
        torch.testing.assert_close(norms, want, rtol=1e-4, atol=1e-6)
    finally:
        h.revert()
    assert all(torch.equal(before[k], v) for k, v in tiny_gemma.state_dict().items())


def test_emmet_refuses_two_layers_and_a_singular_batch(tiny_gemma):
    with pytest.raises(wb.WorkbenchError, match="one layer"):
        wb.edit(tiny_gemma, wb.bundled_facts()[0], method="emmet", layers=[1, 2])
    K = torch.ones(6, 2, dtype=torch.float64)  # two identical keys
    with pytest.raises(wb.WorkbenchError, match="constraint_ridge"):
        equality_update(K, torch.randn(3, 2, dtype=torch.float64), lambda X: X)
    dW = equality_update(K, torch.ones(3, 2, dtype=torch.float64), lambda X: X, constraint_ridge=1e-2)
    assert torch.isfinite(dW).all()


@pytest.mark.slow
def test_emmet_flips_known_facts_on_default_model(gemma):
    facts = wb.bundled_facts()[:2]
    before = {k: v.clone() for k, v in gemma.state_dict().items()}
    with wb.edit(gemma, facts, method="emmet") as h:
        for fact in facts:
            p = wb.probe(gemma, fact.text, targets=[fact.target_new, fact.target_true])[0]
            assert p.target(fact.target_new).prob > p.target(fact.target_true).prob, fact.text
        assert h.info["constraint_residual"] < 1e-4
    assert all(torch.equal(before[k], v) for k, v in gemma.state_dict().items())
