"""The int8 screen: its error bound holds and its top k is the float32 product's top k."""

from __future__ import annotations

import pytest
import torch

from workbench.probing import generate_many
from workbench.runtime import screen
from workbench.runtime.screen import Int8Screen
from workbench.runtime.unembed import MixedUnembed

TEXTS = ["Dear Anna, greetings from my trip to the Eiffel Tower! Today I saw",
         "The Louvre is located in the city of", "def f(x):\n    return x ** 2 + 1\n"]

pytestmark = pytest.mark.skipif(not screen.available(), reason="this PyTorch has no int8 dynamic linear kernel")


def _hidden(model) -> torch.Tensor:
    """The model's final hidden states at every position of TEXTS: what sampling unembeds."""
    with torch.no_grad():
        return torch.cat([model.hf_model.base_model(input_ids=model.tokens(t)).last_hidden_state[0] for t in TEXTS]).float()


def _full(model, h: torch.Tensor) -> torch.Tensor:
    lin = model.bridge.unembed.original_component
    out = h @ lin.weight.float().T
    return out + lin.bias.float() if lin.bias is not None else out


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama", pytest.param("gemma", marks=pytest.mark.slow)])
def test_the_bound_holds_and_the_top_k_is_the_float32_top_k(fixture, request):
    model = request.getfixturevalue(fixture)
    h = _hidden(model)
    lin = model.bridge.unembed.original_component
    s = Int8Screen(lin.weight, lin.bias, h.abs().amax(0).topk(16).indices)
    exact = _full(model, h)
    rough, bound = s.rough(h)
    assert ((exact - rough).abs() <= bound).all()
    assert (bound < exact.abs().amax()).all()  # a bound that prunes nothing would prove nothing useful
    for k in (1, 5):
        values, ids = s.top_logits(h, k)
        ref_values, ref_ids = exact.topk(k, dim=-1)
        assert torch.equal(ids, ref_ids)
        assert torch.allclose(values, ref_values, rtol=1e-5, atol=1e-4)


def test_a_large_value_outside_the_float32_dimensions_only_widens_the_candidates(tiny_gemma):
    model = tiny_gemma
    lin = model.bridge.unembed.original_component
    h = _hidden(model)[:4].clone()
    s = Int8Screen(lin.weight, lin.bias, torch.arange(4))
    h[:, 10] = 40 * h.abs().max()  # coarsens the activation grid of every row in the batch
    rough, bound = s.rough(h)
    exact = _full(model, h)
    assert ((exact - rough).abs() <= bound).all()
    assert torch.equal(s.top_logits(h, 5)[1], exact.topk(5, dim=-1).indices)


def test_the_screen_is_kept_while_the_weight_is_unchanged(tiny_gemma):
    model = tiny_gemma
    h = _hidden(model)[:2]
    first = Int8Screen.for_model(model, h)
    assert Int8Screen.for_model(model, h) is first
    W = model.bridge.unembed.original_component.weight
    saved = W.detach().clone()
    try:
        with torch.no_grad():
            W[5] += 3.0
        again = Int8Screen.for_model(model, h)
        assert again is not first
        assert torch.equal(again.top_logits(h, 3)[1], _full(model, h).topk(3, dim=-1).indices)
    finally:
        with torch.no_grad():
            W.copy_(saved)


def test_mixed_unembed_takes_the_screen_only_without_bfloat16_and_when_allowed(tiny_gemma, monkeypatch):
    assert not MixedUnembed(tiny_gemma, lowp=True).screened
    assert MixedUnembed(tiny_gemma, lowp=False).screened
    monkeypatch.setenv("WORKBENCH_INT8_SCREEN", "0")
    assert not MixedUnembed(tiny_gemma, lowp=False).screened


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama", pytest.param("gemma", marks=pytest.mark.slow)])
def test_greedy_own_loop_equals_hf_generate(fixture, request, monkeypatch):
    from workbench.runtime import unembed

    model = request.getfixturevalue(fixture)
    prompts = ["Paris is", "Dear Anna, greetings from my trip to the Eiffel Tower! Today I", "The tallest mountain is"]
    hf = generate_many(model, prompts, max_new_tokens=20, fast=False)
    for bf16 in (False, True):  # the int8 screen, then the bfloat16 candidates, whatever this CPU has
        monkeypatch.setattr(unembed, "pays_off", lambda m, bf16=bf16: bf16)
        assert generate_many(model, prompts, max_new_tokens=20) == hf, bf16


def test_greedy_keeps_hugging_face_where_the_checkpoint_asks_for_a_penalty(tiny_gemma, monkeypatch):
    import workbench.probing as probing

    gc = tiny_gemma.hf_model.generation_config
    assert probing._plain_greedy(tiny_gemma)
    monkeypatch.setattr(gc, "repetition_penalty", 1.3)
    assert not probing._plain_greedy(tiny_gemma)
    called = []
    monkeypatch.setattr(probing, "_sample_top_k_many", lambda *a, **k: called.append(1))
    texts = generate_many(tiny_gemma, ["Paris is"], max_new_tokens=4)
    assert not called and isinstance(texts[0], str)


def test_a_kernel_that_rounds_otherwise_is_refused_and_top_k_falls_back_to_float32(tiny_gemma, monkeypatch):
    model = tiny_gemma
    h = _hidden(model)[:3]
    monkeypatch.setattr(screen, "_ACT_LEVELS", 255)  # a grid the kernel's seven-bit one is not
    model.memo.clear("int8_screen")
    try:
        with pytest.raises(screen.ScreenUnavailable):
            Int8Screen.for_model(model, h)
        unembed = MixedUnembed(model, lowp=False)
        values, ids = unembed.top_logits(h, 5)
        assert not unembed.screened and torch.equal(ids, _full(model, h).topk(5, dim=-1).indices)
    finally:
        model.memo.clear("int8_screen")
