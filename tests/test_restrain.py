"""PRUNE and RECT: restraints on the MEMIT family's updates, checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from workbench.editing.optimize import as_matrix, value_param
from workbench.editing.restrain import prune_singular_values, rect_mask

SMALL = dict(layers=[1, 2], samples=1500, n_prefixes=2, steps=5, check_known=False, min_prob=0)


def test_prune_maps_only_the_large_singular_values_and_keeps_the_vectors():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(12, 5, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(20, 5, generator=g, dtype=torch.float64))
    S = torch.tensor([50.0, 9.0, 3.0, 1.0, 0.1], dtype=torch.float64)
    delta = (U * S) @ V.T
    out, n = prune_singular_values(delta, 4.0)
    want = torch.tensor([4 + math.log(50 / 4), 4 + math.log(9 / 4), 3.0, 1.0, 0.1], dtype=torch.float64)
    assert n == 2
    torch.testing.assert_close((U * want) @ V.T, out, atol=1e-10, rtol=0)
    same, n0 = prune_singular_values(delta, 100.0)
    assert n0 == 0 and same is delta


def test_rect_keeps_the_largest_relative_changes():
    g = torch.Generator().manual_seed(1)
    W, D = torch.randn(30, 40, generator=g), torch.randn(30, 40, generator=g)
    out = rect_mask(D, W, 0.2)
    kept = out != 0
    assert int(kept.sum()) == round(0.2 * W.numel())
    rel = (D.abs() / W.abs())
    assert float(rel[kept].min()) >= float(rel[~kept].max())
    assert torch.equal(out[kept], D[kept])
    with pytest.raises(wb.WorkbenchError, match="share"):
        rect_mask(D, W, 0)


def _delta(model, handle, layer):
    name, _ = value_param(model, layer)
    return as_matrix(model, handle.after[name]).double() - as_matrix(model, handle.before[name]).double()


def test_memit_with_rect_and_prune_restrains_its_update_and_reverts_bitwise(tiny_gemma):
    model = tiny_gemma
    facts = wb.bundled_facts()[:3]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = wb.edit(model, facts, method="memit", **SMALL)
    plain_delta = {l: _delta(model, plain, l) for l in (1, 2)}
    plain.revert()
    h = wb.edit(model, facts, method="memit", rect=0.2, **SMALL)
    for layer in (1, 2):
        d = _delta(model, h, layer)
        share = float((d != 0).double().mean())
        assert abs(share - 0.2) < 0.01, share
        # What is kept is the unrestrained update's own entries (a mask, not a new solve).
        kept = d != 0
        torch.testing.assert_close(d[kept], plain_delta[layer][kept], atol=1e-5, rtol=1e-4)
    h.revert()
    # PRUNE with a cap far below the update's spectrum: the applied update's singular values are
    # the unrestrained ones mapped by σ_max + ln σ - ln σ_max.
    import workbench.editing.memit as memit

    real = memit.prune_singular_values
    caps = {}

    def small_cap(delta, sigma_max):
        caps["sigma"] = float(torch.linalg.svdvals(delta)[0]) / 10
        return real(delta, caps["sigma"])

    memit.prune_singular_values = small_cap
    try:
        p = wb.edit(model, facts, method="memit", prune=True, **SMALL)
    finally:
        memit.prune_singular_values = real
    top = float(torch.linalg.svdvals(_delta(model, p, 2))[0])
    want = caps["sigma"] + math.log(10)
    assert abs(top - want) < 1e-3 * want
    assert p.info["restraint"]["pruned_singular_values"][2] >= 1
    p.revert()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_restraint_settings_are_refused(tiny_gemma):
    fact = wb.bundled_facts()[0]
    with pytest.raises(wb.WorkbenchError, match="rect"):
        wb.edit(tiny_gemma, fact, method="memit", rect=1.5, **SMALL)
    with pytest.raises(wb.WorkbenchError, match="prune"):
        wb.edit(tiny_gemma, fact, method="memit", prune="yes", **SMALL)
