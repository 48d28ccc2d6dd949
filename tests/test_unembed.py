"""The mixed-precision unembedding of the v* search against the plain float32 one."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing.optimize import build_batch, context_prefixes
from workbench.editing.targets import optimize_deltas
from workbench.editing.search import SearchParams
from workbench.runtime.unembed import MixedUnembed

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


def _hidden_and_targets(model):
    """Final hidden states at the target positions of FACT's prefixed prompts, and the target tokens."""
    batch = build_batch(model, [FACT], context_prefixes(model, 3))
    with torch.no_grad():
        hidden = model.hidden(batch.ids, batch.mask)
    rows = [(r, p) for r in range(len(batch.fact_of)) for p in batch.target_pos[r]]
    h = torch.stack([hidden[r, p] for r, p in rows]).float()
    tok = torch.tensor([t for r in batch.rows(kl=False) for t in batch.target_tok[r]])
    return h, tok


def _loss_and_grad(logp_fn, h, tok):
    """NLL of the targets + KL of the last row against a fixed nearby distribution, and d loss / d h."""
    x = h.clone().requires_grad_(True)
    logp = logp_fn(x)
    n = len(tok)
    ref = logp[n:].detach().roll(1, dims=-1)  # any fixed distribution will do
    loss = -logp[torch.arange(n), tok].mean() + torch.nn.functional.kl_div(ref, logp[n:], log_target=True, reduction="batchmean")
    loss.backward()
    return float(loss.detach()), x.grad, logp.detach()


@pytest.mark.parametrize("fixture", ["tiny_gemma", pytest.param("gemma", marks=pytest.mark.slow)])
def test_mixed_unembed_matches_float32(fixture, request):
    model = request.getfixturevalue(fixture)
    assert MixedUnembed.supported(model)
    h, tok = _hidden_and_targets(model)
    mixed = MixedUnembed(model, lowp=True)  # the bfloat16 path, whatever this CPU does
    exact_loss, exact_grad, exact_logp = _loss_and_grad(lambda x: model.logits_from_hidden(x).float().log_softmax(-1), h, tok)
    loss, grad, logp = _loss_and_grad(lambda x: mixed(x, keep=tok), h, tok)
    n = len(tok)
    # Target log-probabilities: exact logits, only the normaliser's tail is bfloat16.
    assert (logp[torch.arange(n), tok] - exact_logp[torch.arange(n), tok]).abs().max() < 1e-2
    assert abs(loss - exact_loss) < 2e-3 * max(1.0, abs(exact_loss))
    assert float((grad - exact_grad).norm() / exact_grad.norm()) < 1e-2
    # The rows still sum to one.
    assert torch.allclose(logp.exp().sum(-1), torch.ones(len(logp)), atol=1e-4)


def test_bf16_copy_follows_the_weight(tiny_gemma):
    model = tiny_gemma
    first = MixedUnembed(model, lowp=True).weight_bf16
    assert MixedUnembed(model, lowp=True).weight_bf16 is first  # kept while the weight is unchanged
    W = model.bridge.unembed.original_component.weight
    saved = W.detach().clone()
    try:
        with torch.no_grad():
            W[0] += 1.0
        again = MixedUnembed(model, lowp=True).weight_bf16
        assert again is not first
        assert torch.equal(again[0], W[0].to(torch.bfloat16))
    finally:
        with torch.no_grad():
            W.copy_(saved)


@pytest.mark.slow
def test_search_with_mixed_unembed_follows_the_float32_search(gemma):
    """The whole v* search, mixed vs plain float32 unembedding, on the real 262k vocabulary."""
    site = gemma.roles.hook("ffn_out", 4)
    prefixes = context_prefixes(gemma, 3)
    runs = [optimize_deltas(gemma, FACT, [site], prefixes=prefixes, params=SearchParams(steps=4, stop_nll=0.0, mixed_unembed=m, low_precision=False))
            for m in (True, False)]
    fast, slow = runs
    assert max(abs(a - b) for a, b in zip(fast.losses, slow.losses)) < 2e-3 * max(1.0, max(slow.losses))
    cos = torch.nn.functional.cosine_similarity(fast.deltas[site], slow.deltas[site], dim=0)
    assert cos > 0.999


def test_without_native_bfloat16_the_unembedding_is_plain_float32(tiny_gemma, monkeypatch):
    """Emulated bfloat16 made a ROME edit take about a minute on a laptop-like CPU: there the
    mixed unembedding is the float32 one (no bfloat16 copy), with the same interface."""
    from workbench.runtime import unembed

    monkeypatch.setattr(unembed, "native_bf16", lambda: False)
    model = tiny_gemma
    plain = MixedUnembed(model)
    assert not plain.lowp and plain.weight_bf16 is None
    h, tok = _hidden_and_targets(model)
    exact = model.logits_from_hidden(h).float().log_softmax(-1)
    assert torch.allclose(plain(h, keep=tok), exact, atol=1e-5)
    values, ids = plain.top_logits(h, 5)
    assert torch.equal(ids, model.logits_from_hidden(h).float().topk(5, dim=-1).indices)
    monkeypatch.setattr(unembed, "native_bf16", lambda: True)
    assert MixedUnembed(model).lowp
