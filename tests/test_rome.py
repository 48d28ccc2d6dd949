"""ROME maths and mechanics on a tiny model (fast), and one real flip (slow)."""

from __future__ import annotations

import os

import pytest
import torch

import workbench as wb
from workbench.editing.optimize import as_matrix, build_batch, capture, context_prefixes, value_param
from workbench.editing.rome import rank_one_update
from workbench.editing.stats import second_moment, second_moments

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


@pytest.fixture(scope="module")
def tiny(request):
    return wb.load_model(getattr(request, "param", "tiny-gemma3"))


def test_rank_one_maps_key_to_target():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(32, 32, generator=g, dtype=torch.float64)
    C = A @ A.T / 32
    k = torch.randn(32, generator=g, dtype=torch.float64)
    W = torch.randn(8, 32, generator=g, dtype=torch.float64)
    v = torch.randn(8, generator=g, dtype=torch.float64)
    W_new = W + rank_one_update(C, k, v - W @ k)
    assert torch.allclose(W_new @ k, v, atol=1e-10)
    # keys orthogonal to C^-1 k (in the C^-1 metric) are untouched
    u = torch.linalg.solve(C + 1e-4 * C.diagonal().mean() * torch.eye(32, dtype=torch.float64), k)
    other = torch.randn(32, generator=g, dtype=torch.float64)
    other -= (u @ other) / (u @ u) * u
    assert torch.allclose(W_new @ other, W @ other, atol=1e-9)


def test_stats_cached_and_consistent(tiny):
    C = second_moments(tiny, [0, 2], samples=1500)
    assert set(C) == {0, 2}
    assert C[0].shape == (tiny.d_mlp, tiny.d_mlp) and C[0].dtype == torch.float64
    assert torch.allclose(C[0], C[0].T)
    assert torch.linalg.eigvalsh(C[2]).min() > -1e-6
    again = second_moment(tiny, 2, samples=1500)  # from the cache
    assert torch.equal(again, C[2])


# tiny-olmo and tiny-phi3 run on the default roles (no entry in architecture.FAMILIES).
@pytest.mark.parametrize("tiny", ["tiny-gemma3", "tiny-olmo", "tiny-phi3"], indirect=True)
def test_rome_edit_maps_kstar_to_vstar_and_reverts(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    h = wb.edit(tiny, FACT, method="rome", layers=[1], samples=1500, n_prefixes=2, n_key_prefixes=3, steps=5,
                check_known=False, min_prob=0)
    try:
        name, param = value_param(tiny, 1)
        assert set(h.after) == {name}
        # W_new k* == W_old k* + delta == v*: recompute k* (over the key prefixes) on the committed weights.
        prefixes = context_prefixes(tiny, 3)
        kb = build_batch(tiny, [FACT], prefixes, kl_prompt=None, with_targets=False)
        hook = tiny.roles.hook("ffn_keys", 1)
        k = capture(tiny, kb, [hook])[hook][0]
        W_old = as_matrix(tiny, h.before[name]).double()
        W_new = as_matrix(tiny, h.after[name]).double()
        delta = (W_new - W_old) @ k
        assert abs(h.info["facts"][0]["delta_norm"] - float(delta.norm())) < 1e-4 * max(1.0, float(delta.norm()))
    finally:
        h.revert()
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_rome_refuses_several_layers(tiny):
    with pytest.raises(wb.WorkbenchError, match="one layer"):
        wb.edit(tiny, FACT, method="rome", layers=[1, 2], samples=1500)


@pytest.mark.slow
def test_rome_flips_known_fact_on_default_model(gemma):
    model = gemma
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with wb.edit(model, FACT, method="rome") as h:
        p = wb.probe(model, FACT.text, targets=["Paris", "Rome"])[0]
        assert p.target("Rome").prob > p.target("Paris").prob
        assert h.info["facts"][0]["prob"] > 0.3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-llama"])
@pytest.mark.parametrize("site_layer, extra_layers", [(1, [0]), (2, [0, 2])])
def test_suffix_only_search_equals_full_forward(name, site_layer, extra_layers):
    """The v* search re-running only the suffix, above the edited block, gives the full-forward losses and δ.

    Site at layer 2: blocks 0-1 are run once and skipped after; an earlier edit at layer 0
    (below, baked into that first pass) and one at layer 2 (run every step) must both act.
    """
    from workbench.editing.optimize import SuffixRunner, build_batch, virtual_update_hooks
    from workbench.editing.targets import optimize_deltas
    from workbench.editing.search import SearchParams

    model = wb.load_model(name)
    prefixes = context_prefixes(model, 3)
    site = model.roles.hook("ffn_out", site_layer)
    # Earlier edits of the same handle, present as hooks, must act on the cached prefix too.
    g = torch.Generator().manual_seed(1)
    extra = virtual_update_hooks(model, {
        layer: torch.randn(model.d_model, model.d_mlp, generator=g, dtype=torch.float64) * 0.05 for layer in extra_layers
    })
    runs = [
        optimize_deltas(model, FACT, [site], prefixes=prefixes, params=SearchParams(steps=4, stop_nll=0.0, low_precision=False), extra_hooks=extra, reuse_prefix=r)
        for r in (True, False)
    ]
    fast, slow = runs
    assert len(fast.losses) == len(slow.losses) == 4
    assert max(abs(a - b) for a, b in zip(fast.losses, slow.losses)) < 1e-4 * max(1.0, max(slow.losses))
    assert torch.allclose(fast.init[site], slow.init[site], atol=1e-5)
    assert torch.allclose(fast.deltas[site], slow.deltas[site], atol=1e-4)
    # The runner really skips the blocks below the site, and the model is itself again after.
    batch = build_batch(model, [FACT], prefixes)
    with torch.no_grad():
        reference = model.hidden(batch.ids, batch.mask)
    runner = SuffixRunner(model, batch, extra, start_block=site_layer)
    assert runner.start_block == site_layer
    runner.hidden()
    with torch.no_grad():
        assert torch.equal(model.hidden(batch.ids, batch.mask), reference)


def test_ridge_solver_matches_a_direct_solve(tiny):
    from workbench.editing.stats import ridge_solver

    C = second_moment(tiny, 2, samples=1500)
    g = torch.Generator().manual_seed(3)
    k = torch.randn(tiny.d_mlp, generator=g, dtype=torch.float64)
    delta = torch.randn(tiny.d_model, generator=g, dtype=torch.float64)
    solve = ridge_solver(tiny, 2, samples=1500, reg=1e-4)
    fast = rank_one_update(None, k, delta, solve=solve)
    slow = rank_one_update(C, k, delta, reg=1e-4)
    assert torch.allclose(fast, slow, rtol=1e-8, atol=1e-10 * float(slow.abs().max()))
    # The factor is kept: a second solver for the same key reuses it.
    assert ridge_solver(tiny, 2, samples=1500, reg=1e-4)(k).equal(solve(k))
    with pytest.raises(wb.WorkbenchError, match="needs C or solve"):
        rank_one_update(None, k, delta)


def test_capture_stops_after_the_last_hook_it_needs(tiny):
    """Keys captured with the forward cut short equal the keys of a full forward."""
    prefixes = context_prefixes(tiny, 2)
    kb = build_batch(tiny, [FACT], prefixes, kl_prompt=None, with_targets=False)
    hook = tiny.roles.hook("ffn_keys", 0)
    later = tiny.roles.hook("ffn_keys", tiny.n_layers - 1)
    calls = []
    k = capture(tiny, kb, [hook], extra_hooks=[(later, lambda a, hook=None: calls.append(1))])[hook][0]
    assert not calls  # the last block never ran
    full = {}
    with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=[(hook, lambda a, hook=None: full.setdefault("k", a))]):
        tiny.hidden(kb.ids, kb.mask)
    mean = torch.stack([full["k"][i, kb.subject_pos[i]] for i in range(len(kb.fact_of))]).double().mean(0)
    assert torch.allclose(k, mean, atol=1e-6)


def test_prepare_pays_the_first_edits_costs_and_changes_no_result(empty_cache):
    """`prepare` makes what ROME's first edit makes once (C's factor, prefixes, bfloat16
    copies); an edit after it writes the same weights, bit for bit, as a cold one."""
    from workbench.editing import prepare
    from workbench.editing.stats import _path

    fact = wb.Fact("Paris", "{} is the capital of", "France", "Mars Station")
    warm, cold = wb.load_model("tiny-llama"), wb.load_model("tiny-llama")
    assert warm.fingerprint == cold.fingerprint
    layer = wb.editing.defaults.default_layers(warm, "rome")[0]
    # Statistics only from disk: none there, so none computed and no factor kept.
    prepare(warm, "rome", compute_statistics=False)
    assert not _path(warm, layer, "stats", 20_000).exists()
    assert not list(warm.memo.keys("ridge_factor"))
    prepare(warm, "rome")
    assert _path(warm, layer, "stats", 20_000).exists() and list(warm.memo.keys("ridge_factor"))
    kw = dict(min_prob=0, steps=3, check_known=False)
    h = wb.edit(warm, fact, method="rome", **kw)
    after_warm = value_param(warm, layer)[1].detach().clone()
    h.revert()
    h = wb.edit(cold, fact, method="rome", **kw)
    assert torch.equal(value_param(cold, layer)[1].detach(), after_warm)
    h.revert()
    assert prepare(warm, "in-context") >= 0  # nothing to prepare: no error
    with pytest.raises(wb.WorkbenchError, match="unknown editing method"):
        prepare(warm, "nope")


def test_rome_can_count_bos_in_its_statistics_under_their_own_key(tiny):
    """stats_bos=True solves against C with BOS positions (another C, another cache entry)."""
    from workbench.editing.stats import second_moment

    settings = dict(layers=[1], samples=1500, n_prefixes=2, n_key_prefixes=3, steps=5, check_known=False, min_prob=0)
    assert not torch.equal(second_moment(tiny, 1, samples=1500), second_moment(tiny, 1, samples=1500, include_bos=True))
    with wb.edit(tiny, FACT, method="rome", **settings) as plain:
        a = {k: v.clone() for k, v in plain.after.items()}
    with wb.edit(tiny, FACT, method="rome", stats_bos=True, **settings) as bos:
        assert bos.info["stats_bos"] is True and plain.info["stats_bos"] is False
        assert any(not torch.equal(a[k], v) for k, v in bos.after.items())
