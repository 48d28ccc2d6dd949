"""The v* search's bfloat16 blocks (workbench/runtime/lowp.py): weights come back bitwise, numbers follow float32."""

from __future__ import annotations

import os

import pytest
import torch

import workbench as wb
from workbench.runtime.bfloat16 import bf16_copies
from workbench.runtime import lowp
from workbench.runtime.lowp import LowPrecisionBlocks
from workbench.editing.optimize import context_prefixes
from workbench.editing.targets import optimize_deltas
from workbench.editing.search import SearchParams

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


@pytest.fixture(scope="module")
def tiny():
    return wb.load_model("tiny-gemma3")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Let the search use bfloat16 blocks whatever this CPU advertises (slower if emulated, same numbers)."""
    monkeypatch.setattr(lowp, "native_bf16", lambda: True)


def _snapshot(model):
    return {n: (p, p.data_ptr(), p.detach().clone()) for n, p in model.hf_model.named_parameters()}


def _unchanged(model, snap) -> bool:
    return all(
        p.data_ptr() == ptr and p.dtype == saved.dtype and torch.equal(p.detach(), saved)
        for p, ptr, saved in snap.values()
    )


def test_blocks_run_in_bfloat16_and_the_weights_come_back_bitwise(tiny):
    snap = _snapshot(tiny)
    layers = tiny.hf_model.base_model.layers
    ids = torch.tensor([tiny.encode(FACT.text)])
    with torch.no_grad():
        reference = tiny.hidden(ids)
        with LowPrecisionBlocks(tiny, start_block=1):
            assert all(p.dtype == torch.bfloat16 for p in layers[1].parameters() if p.dim() == 2)
            assert all(p.dtype == torch.float32 for p in layers[0].parameters())
            low = tiny.hidden(ids)
    assert _unchanged(tiny, snap)
    assert not torch.equal(low.float(), reference)  # it did compute in bfloat16 ...
    assert torch.allclose(low.float(), reference, rtol=0.05, atol=0.05)  # ... and close to float32
    # An error inside (an interrupted step) restores them too.
    with pytest.raises(KeyboardInterrupt), LowPrecisionBlocks(tiny, start_block=0):
        raise KeyboardInterrupt
    assert _unchanged(tiny, snap)
    assert not torch.is_autocast_enabled("cpu")


def test_bfloat16_copies_are_reused_until_the_weight_changes(tiny):
    p = tiny.hf_model.base_model.layers[1].mlp.down_proj.weight
    first = bf16_copies(tiny, [p])[0]
    assert bf16_copies(tiny, [p])[0] is first
    saved = p.detach().clone()
    try:
        with torch.no_grad():
            p[0, 0] += 1.0
        again = bf16_copies(tiny, [p])[0]
        assert again is not first and torch.equal(again, p.detach().to(torch.bfloat16))
    finally:
        with torch.no_grad():
            p.copy_(saved)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-llama"])
def test_search_in_bfloat16_follows_float32_and_stops_on_float32_numbers(name, bf16_cpu):
    model = wb.load_model(name)
    snap = _snapshot(model)
    prefixes = context_prefixes(model, 3)
    site = model.roles.hook("ffn_out", 1)
    low, exact = (
        optimize_deltas(model, FACT, [site], prefixes=prefixes, params=SearchParams(steps=4, stop_nll=0.0, low_precision=lp))
        for lp in (True, False)
    )
    assert _unchanged(model, snap)
    assert low.losses != exact.losses  # bfloat16 really ran
    assert max(abs(a - b) for a, b in zip(low.losses, exact.losses)) < 0.02 * max(1.0, max(exact.losses))
    assert torch.nn.functional.cosine_similarity(low.deltas[site], exact.deltas[site], dim=0) > 0.99
    # The returned NLL belongs to the returned δ, in float32: without a stop, the best δ measured,
    # re-measured in float32 — an unedited first step beats no later one here, so compare the
    # stop-at-once case, where both searches return δ = 0 and its float32 NLL.
    stop_now = [
        optimize_deltas(model, FACT, [site], prefixes=prefixes, params=SearchParams(stop_nll=1e9, low_precision=lp))
        for lp in (True, False)
    ]
    assert stop_now[0].steps == stop_now[1].steps == 1
    assert stop_now[0].nll == pytest.approx(stop_now[1].nll, rel=1e-6)


def test_out_of_steps_returns_the_best_measured_delta(tiny):
    """When stop_nll is never met, δ is the step with the lowest NLL, and the NLL reported is its own."""
    prefixes = context_prefixes(tiny, 2)
    site = tiny.roles.hook("ffn_out", 1)
    res = optimize_deltas(tiny, FACT, [site], prefixes=prefixes, params=SearchParams(steps=6, stop_nll=0.0, low_precision=False))
    again = optimize_deltas(
        tiny, FACT, [site], prefixes=prefixes, params=SearchParams(steps=1, stop_nll=0.0, low_precision=False), reuse_prefix=False,
        extra_hooks=[(site, lambda acts, hook=None: acts + _at_subject(tiny, acts, res.deltas[site]))],
    )
    # Adding the returned δ by hand and measuring (one step, δ' = 0) gives the reported NLL.
    assert again.nll == pytest.approx(res.nll, rel=1e-3)


def _at_subject(model, acts, delta):
    """δ added at each row's last subject token (the rows of build_batch for FACT)."""
    from workbench.editing.optimize import build_batch

    batch = build_batch(model, [FACT], context_prefixes(model, 2))
    add = torch.zeros_like(acts)
    add[torch.arange(acts.shape[0]), torch.tensor(batch.subject_pos)] = delta.to(acts.dtype)
    return add


def test_auto_takes_the_bfloat16_search_only_where_the_edits_agreed(tiny_gemma, monkeypatch):
    """``low_precision="auto"`` follows the committed comparison with the float32 search."""
    from workbench.editing import search
    from workbench.editing.search import SearchParams, search_in_bfloat16

    measured = search.measured_agreement
    monkeypatch.setattr(lowp, "native_bf16", lambda: True)
    for agreement, expected in ((0.92, False), (0.995, True), (None, False)):
        monkeypatch.setattr(search, "measured_agreement", lambda name, a=agreement: a)
        assert search_in_bfloat16(tiny_gemma, SearchParams()) is expected
    assert search_in_bfloat16(tiny_gemma, SearchParams(low_precision=True))
    assert not search_in_bfloat16(tiny_gemma, SearchParams(low_precision=False))
    monkeypatch.setattr(lowp, "native_bf16", lambda: False)
    assert not search_in_bfloat16(tiny_gemma, SearchParams(low_precision=True))
    # The committed record for the default model: 183 of 199 facts agreed, below the bound.
    assert measured("gemma-3-270m") == pytest.approx(183 / 199)
    with pytest.raises(wb.WorkbenchError, match="low_precision must be True, False or 'auto'"):
        SearchParams(low_precision="yes")
