"""The one door to activations (workbench/core/activations.py) and the model's memo (Model.memo)."""

from __future__ import annotations

import pytest
import torch

from workbench.core.activations import capture, hooked, virtual_update_hooks
from workbench.runtime.bfloat16 import bf16_copies
from workbench.core.model import Memo

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(params=["tiny_gemma", "tiny_llama"])
def model(request):
    return request.getfixturevalue(request.param)


def _full_run(model, ids, names):
    """The sites read the long way: hooks that keep a copy, the whole forward pass."""
    got = {}

    def keep(name):
        def fn(acts, hook):
            got[name] = acts.detach().clone()
        return fn

    with torch.no_grad(), hooked(model, [(n, keep(n)) for n in names]):
        model.hidden(ids)
    return got


def test_capture_reads_what_a_full_pass_reads_and_stops_after_the_last_site(model):
    ids = model.tokens(PROMPT)
    names = [model.roles.hook("ffn_keys", 0), model.roles.hook("resid", 1), model.roles.hook("embed")]
    want = _full_run(model, ids, names)
    ran_above = []
    above = [(model.roles.hook("resid", model.n_layers - 1), lambda acts, hook: ran_above.append(1))]
    got = capture(model, PROMPT, names, extra_hooks=above)
    assert set(got) == set(names) and not ran_above  # stopped at block 1
    for n in names:
        assert torch.equal(got[n], want[n])
    capture(model, ids, names, stop=False, extra_hooks=above)
    assert ran_above


def test_capture_positions_and_masked_rows(model):
    a, b = model.encode(PROMPT), model.encode("Paris is the capital of")
    width = max(len(a), len(b))
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, s in enumerate((a, b)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    site = model.roles.hook("resid", 1)
    full = capture(model, ids, [site], mask=mask)[site]
    picked = capture(model, ids, [site], mask=mask, positions=[len(a) - 1, len(b) - 1])[site]
    assert torch.equal(picked, torch.stack([full[0, len(a) - 1], full[1, len(b) - 1]]))
    assert torch.equal(capture(model, ids, [site], mask=mask, positions=0)[site], full[:, 0])


def test_virtual_update_hooks_act_like_the_weight_change(model):
    from workbench.editing.weights import as_matrix, value_param

    layer = 1
    name, param = value_param(model, layer)
    dW = torch.randn_like(as_matrix(model, param.detach())) * 1e-2
    site = model.roles.hook("resid", model.n_layers - 1)
    virtual = capture(model, PROMPT, [site], extra_hooks=virtual_update_hooks(model, {layer: dW}))[site]
    plain = capture(model, PROMPT, [site])[site]
    assert not torch.equal(virtual, plain)
    # The hooks leave nothing behind.
    assert torch.equal(capture(model, PROMPT, [site])[site], plain)


def test_memo_keeps_builds_again_under_a_new_stamp_and_clears_by_kind():
    memo, calls = Memo(), []
    build = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert memo.get(("a", 1), build) == 1 and memo.get(("a", 1), build) == 1
    assert memo.get(("b",), build, stamp=1) == 2 and memo.get(("b",), build, stamp=1) == 2
    assert memo.get(("b",), build, stamp=2) == 3
    assert sorted(memo.keys("a")) == [("a", 1)] and len(memo) == 2
    memo.clear("a")
    assert list(memo.keys()) == [("b",)]


def test_bf16_copies_live_in_the_memo_and_follow_a_weight_change(tiny_llama):
    p = tiny_llama.hf_model.lm_head.weight
    first = bf16_copies(tiny_llama, [p])[0]
    assert bf16_copies(tiny_llama, [p])[0] is first and ("bf16", id(p)) in tiny_llama.memo
    saved = p.detach().clone()
    try:
        with torch.no_grad():
            p.add_(1.0)
        again = bf16_copies(tiny_llama, [p])[0]
        assert again is not first and torch.equal(again, p.detach().to(torch.bfloat16))
    finally:
        with torch.no_grad():
            p.copy_(saved)
