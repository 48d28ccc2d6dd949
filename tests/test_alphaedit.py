"""AlphaEdit: the update leaves preserved keys alone; kept keys live and die with their edits."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing import alphaedit as ae
from workbench.editing.optimize import as_matrix, value_param
from workbench.editing.stats import second_moment

SMALL = dict(layers=[1, 2], samples=1500, n_prefixes=2, steps=5, check_known=False, min_prob=0)


def test_null_projector_spans_the_small_eigenvalues():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    values = torch.tensor([100.0] * 10 + [1e-5] * 6, dtype=torch.float64)
    C = Q @ torch.diag(values) @ Q.T
    P, dim = ae.null_projector(C, 1e-2)
    assert dim == 6
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)
    torch.testing.assert_close(P @ Q[:, :10], torch.zeros(16, 10, dtype=torch.float64), atol=1e-10, rtol=0)
    # A share of the trace: scaling C does not change the null space.
    P2, dim2 = ae.null_projector(1e6 * C, 1e-2)
    assert dim2 == 6 and torch.allclose(P, P2, atol=1e-10)


def test_preserved_keys_keep_their_outputs(tiny_gemma):
    facts = wb.bundled_facts()[:3]
    h = wb.edit(tiny_gemma, facts, method="alphaedit", **SMALL)
    try:
        for layer in (1, 2):
            C = second_moment(tiny_gemma, layer, samples=1500)
            values, vectors = torch.linalg.eigh(C)
            share = torch.cumsum(values, 0) / values.sum()
            keep = share > ae.NULL_ENERGY
            assert h.info["null_dim"][layer] == int((~keep).sum()) > 0
            # Keys in C's preserved subspace, at the size of real keys there.
            keys = vectors[:, keep] * values[keep].sqrt()
            name, _ = value_param(tiny_gemma, layer)
            W = as_matrix(tiny_gemma, h.before[name]).double()
            dW = as_matrix(tiny_gemma, h.after[name]).double() - W
            ratio = (dW @ keys).norm(dim=0) / (W @ keys).norm(dim=0)
            assert float(ratio.max()) <= 1e-4, layer
            assert float(dW.norm()) > 0
    finally:
        h.revert()


def test_kept_keys_follow_the_edit_stack_and_the_saved_file(tiny_gemma, tmp_path):
    before = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    facts = wb.bundled_facts()[:4]
    h1 = wb.edit(tiny_gemma, facts[:2], method="alphaedit", **SMALL)
    assert ae.kept_keys(tiny_gemma, 1).shape == (tiny_gemma.d_mlp, 2)
    h2 = wb.edit(tiny_gemma, facts[2:], method="alphaedit", **SMALL)
    assert ae.kept_keys(tiny_gemma, 2).shape == (tiny_gemma.d_mlp, 4)
    # The later edit spared the earlier edit's keys: they still get (about) what h1 gave them.
    name, _ = value_param(tiny_gemma, 1)
    K1 = h1.memory["keys.L1"].double()
    d2 = as_matrix(tiny_gemma, h2.after[name]).double() - as_matrix(tiny_gemma, h2.before[name]).double()
    d1 = as_matrix(tiny_gemma, h1.after[name]).double() - as_matrix(tiny_gemma, h1.before[name]).double()
    assert float((d2 @ K1).norm()) < 0.5 * float((d1 @ K1).norm())
    path = h2.save(tmp_path / "second")
    h2.revert()
    assert ae.kept_keys(tiny_gemma, 2).shape == (tiny_gemma.d_mlp, 2)
    h2b = wb.load_edit(tiny_gemma, path)
    assert torch.equal(h2b.memory["keys.L2"], h2.memory["keys.L2"])
    h2b.revert()
    h1.revert()
    assert ae.kept_keys(tiny_gemma, 1) is None
    assert all(torch.equal(before[k], v) for k, v in tiny_gemma.state_dict().items())


def test_a_failure_mid_edit_leaves_weights_and_kept_keys(tiny_gemma, monkeypatch):
    facts = wb.bundled_facts()[:4]
    h1 = wb.edit(tiny_gemma, facts[:2], method="alphaedit", **SMALL)
    try:
        weights = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
        kept = ae.kept_keys(tiny_gemma, 2).clone()
        real, calls = ae._projector, []

        def fail_on_second_layer(*args):
            calls.append(1)
            if len(calls) == 2:
                raise wb.WorkbenchError("forced failure at the second layer")
            return real(*args)

        monkeypatch.setattr(ae, "_projector", fail_on_second_layer)
        with pytest.raises(wb.WorkbenchError, match="forced failure"):
            wb.edit(tiny_gemma, facts[2:], method="alphaedit", **SMALL)
        assert all(torch.equal(weights[k], v) for k, v in tiny_gemma.state_dict().items())
        assert torch.equal(ae.kept_keys(tiny_gemma, 2), kept)
        assert wb.active_edits(tiny_gemma) == [h1]
    finally:
        h1.revert()


def test_alphaedit_refuses_memits_lambda(tiny_gemma):
    with pytest.raises(wb.WorkbenchError, match="does not use mom2_weight"):
        wb.edit(tiny_gemma, wb.bundled_facts()[0], method="alphaedit", mom2_weight=10.0, **SMALL)


@pytest.mark.slow
def test_alphaedit_flips_a_known_fact_on_default_model(gemma):
    fact = wb.bundled_facts()[0]
    before = {k: v.clone() for k, v in gemma.state_dict().items()}
    h = wb.edit(gemma, fact, method="alphaedit", min_prob=0)
    try:
        p = wb.probe(gemma, fact.text, targets=[fact.target_true, fact.target_new]).prompts[0]
        assert p.targets[1].prob > 0.5 and p.targets[1].prob > p.targets[0].prob
        assert ae.kept_keys(gemma, h.layers[-1]) is not None
    finally:
        h.revert()
    assert all(torch.equal(before[k], v) for k, v in gemma.state_dict().items())
    assert ae.kept_keys(gemma, h.layers[-1]) is None
