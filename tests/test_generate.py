"""Top-k sampling: the fast loop (bfloat16 candidates, float32 logits) draws what Hugging Face's generate draws."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.probing import generate_many
from workbench.runtime.unembed import MixedUnembed


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama", pytest.param("gemma", marks=pytest.mark.slow)])
def test_fast_top_k_sampling_equals_hf_generate(fixture, request):
    model = request.getfixturevalue(fixture)
    prompts = ["The Eiffel Tower is", "Michael Jordan plays"]
    for prompt in prompts:
        for seed in (0, 1, 2):
            kwargs = dict(max_new_tokens=16, do_sample=True, top_k=5, seed=seed)
            fast = wb.generate(model, prompt, **kwargs)
            slow = wb.generate(model, prompt, fast=False, **kwargs)
            assert fast == slow, (prompt, seed)
    # A temperature is applied before the top-k, as in Hugging Face's sampler.
    kwargs = dict(max_new_tokens=12, do_sample=True, top_k=5, seed=3, temperature=0.7)
    assert wb.generate(model, prompts[0], **kwargs) == wb.generate(model, prompts[0], fast=False, **kwargs)


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama", pytest.param("gemma", marks=pytest.mark.slow)])
def test_batched_fast_top_k_sampling_equals_hf_generate(fixture, request):
    model = request.getfixturevalue(fixture)
    # Different lengths: left padding, positions from each row's first real token, and a row
    # that meets the end token before the others (padded from then on, as Hugging Face does).
    prompts = ["Paris is", "Dear Anna, greetings from my trip to the Eiffel Tower! Today I",
               "Dear Anna, greetings from my trip to the Eiffel Tower! Today I", "The tallest mountain is"]
    for seed in (0, 1):
        kwargs = dict(max_new_tokens=24, do_sample=True, top_k=5, seed=seed)
        fast = generate_many(model, prompts, **kwargs)
        assert fast == generate_many(model, prompts, fast=False, **kwargs), seed
    # A hook on a block (as GRACE and WISE edit) is seen by the own loop as by Hugging Face's
    # (a shift, not a scale: Gemma normalises the FFN output after it).
    kwargs = dict(max_new_tokens=12, do_sample=True, top_k=5, seed=4)
    plain = generate_many(model, prompts, **kwargs)
    handle = model.bridge.blocks[1].mlp.register_forward_hook(lambda mod, args, out: out + out.abs().mean())
    try:
        hooked = generate_many(model, prompts, **kwargs)
        assert hooked == generate_many(model, prompts, fast=False, **kwargs)
    finally:
        handle.remove()
    assert hooked != plain


def test_batched_sampling_reports_the_growing_texts_and_gives_way_to_cancel(tiny_gemma):
    from workbench.runtime.progress import CancelToken, Cancelled

    model, prompts = tiny_gemma, ["Paris is", "The tallest mountain is"]
    seen: list[list[str]] = []
    texts = generate_many(model, prompts, max_new_tokens=6, do_sample=True, top_k=5, on_text=seen.append)
    assert 1 <= len(seen) <= 6 and seen[-1] == texts
    token = CancelToken()
    calls = []

    def cancel_after_two(texts):
        calls.append(texts)
        if len(calls) == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        generate_many(model, prompts, max_new_tokens=20, do_sample=True, top_k=5, cancel=token,
                         on_text=cancel_after_two)
    assert len(calls) == 2


def test_top_logits_are_the_float32_top_k(tiny_gemma):
    model = tiny_gemma
    hidden = torch.randn(3, model.d_model, generator=torch.Generator().manual_seed(0))
    values, ids = MixedUnembed(model, lowp=True).top_logits(hidden, 5)
    exact = model.logits_from_hidden(hidden).float()
    ref_values, ref_ids = exact.topk(5, dim=-1)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(values, ref_values, rtol=1e-5, atol=1e-5)


def test_sampling_leaves_the_global_rng_alone(tiny_llama):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    wb.generate(tiny_llama, "Paris is", max_new_tokens=5, do_sample=True, top_k=5, seed=9)
    assert torch.equal(torch.rand(3), expected)


def _slow_greedy(model, prompt: str, n: int, stops) -> str:
    """Greedy decoding the obvious way: the whole sequence through the model at every step."""
    ids = model.tokens(prompt)[0].tolist()
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = model.hf_model(torch.tensor([ids + new])).logits[0, -1]
            new.append(int(logits.argmax()))
            if new[-1] in stops:
                break
    cut = next((k for k, t in enumerate(new) if t in stops), len(new))
    return model.tokenizer.decode(new[:cut], skip_special_tokens=True)


def test_generate_many_ends_at_stop_tokens_and_reports_the_growing_texts(tiny_gemma, monkeypatch):
    import workbench.probing as probing

    model, prompts, n = tiny_gemma, ["Paris is", "The tallest mountain on the planet Earth is"], 8
    free = {p: probing.generate_many(model, [p], max_new_tokens=n) for p in prompts}  # warm the stop set
    # Make each prompt's third greedy token a stop token: every row then ends by step 3 of 8.
    third = {p: _slow_greedy(model, p, 3, set()) for p in prompts}
    assert all(free.values()) and all(third.values())
    ids = [model.tokens(p)[0].tolist() for p in prompts]
    with torch.no_grad():
        thirds = set()
        for p, row in zip(prompts, ids):
            new: list[int] = []
            for _ in range(3):
                new.append(int(model.hf_model(torch.tensor([row + new])).logits[0, -1].argmax()))
            thirds.add(new[-1])
    stops = frozenset(probing._stop_ids(model) | thirds)
    monkeypatch.setattr(probing, "_stop_ids", lambda m: stops)
    seen: list[list[str]] = []
    texts = probing.generate_many(model, prompts, max_new_tokens=n, on_text=seen.append)
    assert texts == [_slow_greedy(model, p, n, stops) for p in prompts]
    assert 1 <= len(seen) <= 3 < n  # one report per new token, and the batch ended early
    assert seen[-1] == texts
    # Without the extra stops the same prompts run all 8 steps, one report each.
    monkeypatch.undo()
    seen.clear()
    assert probing.generate_many(model, prompts, max_new_tokens=n, on_text=seen.append) == \
        [_slow_greedy(model, p, n, probing._stop_ids(model)) for p in prompts]
    assert len(seen) <= n and all(len(s) == len(prompts) for s in seen)


def test_the_draw_over_the_top_k_is_the_whole_vocabulary_multinomial():
    from workbench.probing import _draw

    vocab, gen = 1000, torch.Generator().manual_seed(0)
    for seed in range(30):
        values = torch.randn(4, 5, generator=gen) * 3
        tokens = torch.stack([torch.randperm(vocab, generator=gen)[:5] for _ in range(4)])
        probs = torch.zeros(4, vocab)
        probs.scatter_(1, tokens, values.softmax(-1))
        torch.manual_seed(seed)
        expected, after = torch.multinomial(probs, 1)[:, 0], torch.rand(2)
        torch.manual_seed(seed)
        assert torch.equal(_draw(values, tokens, vocab), expected), seed
        assert torch.equal(torch.rand(2), after)  # the random stream left where multinomial leaves it
