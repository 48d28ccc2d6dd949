"""Top-k sampling: the fast loop (bfloat16 candidates, float32 logits) draws what Hugging Face's generate draws."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.unembed import MixedUnembed


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


def test_top_logits_are_the_float32_top_k(tiny_gemma):
    model = tiny_gemma
    hidden = torch.randn(3, model.d_model, generator=torch.Generator().manual_seed(0))
    values, ids = MixedUnembed(model).top_logits(hidden, 5)
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
