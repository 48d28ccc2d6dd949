"""WISE: a side memory for one FFN value matrix and a router; the main weights are never written."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing.handle import active_edits
from workbench.editing.wise import WiseOverlay

FAST = dict(layers=[2], steps=15, lr=0.5, n_prefixes=0, n_contrast=2, min_prob=0)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _logits(model, prompt):
    return model.logits(model.tokens(prompt))


def _value_io(model, layer, prompt):
    got = []
    h = model.bridge.blocks[layer].mlp.out.register_forward_hook(
        lambda m, a, o: got.append((a[0].detach().clone(), o.detach().clone())))
    try:
        model.logits(model.tokens(prompt))
    finally:
        h.remove()
    return got[0]


def test_router_and_side_output_equal_the_formula():
    g = torch.Generator().manual_seed(0)
    keys, values = torch.randn(3, 16, generator=g), torch.randn(3, 4, generator=g)
    mem = WiseOverlay(0, keys, values, tau=2.0)
    acts, out = torch.randn(1, 10, 16, generator=g), torch.randn(1, 10, 4, generator=g)
    got = mem.respond(acts, out, [mem])
    side = torch.stack([sum(float(a @ k) * v for k, v in zip(keys, values)) for a in acts[0]])
    routed = side.norm(dim=-1) > 2.0
    want = torch.where(routed[:, None], out[0] + side, out[0])
    assert routed.any() and not routed.all()
    assert torch.allclose(got[0], want, atol=1e-5)
    assert torch.equal(got[0][~routed], out[0][~routed])  # the main memory, bitwise


def test_wise_routes_the_edit_prompt_and_leaves_weights_and_other_text(tiny_gemma):
    model = tiny_gemma
    fact = wb.bundled_facts()[0]
    other = "The weather in the mountains was"
    before, base = _weights(model), _logits(model, other)
    a0, out0 = _value_io(model, 2, fact.text)
    h = wb.edit(model, fact, method="wise", **FAST)
    try:
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        mem = h.prompt_edit
        a, out = _value_io(model, 2, fact.text)
        assert torch.equal(a, a0)  # the keys are read below the side memory
        assert bool(mem.routed(a)[0, -1])  # the edit position reads the side memory
        assert torch.allclose(out[0, -1], out0[0, -1] + mem.delta(a)[0, -1], atol=1e-5)
        assert h.info["nll"] < h.info["nll_before"]
        a_other, _ = _value_io(model, 2, other)
        if not bool(mem.routed(a_other).any()):
            assert torch.equal(_logits(model, other), base)
    finally:
        h.revert()
    assert torch.equal(_logits(model, other), base)
    assert model.prompt_edits == [] and active_edits(model) == []


def test_sequential_edits_share_one_side_memory_revert_exactly_and_save(tiny_gemma, tmp_path):
    model = tiny_gemma
    facts = wb.bundled_facts()[:3]
    prompts = [f.text for f in facts]
    first = wb.edit(model, facts[0], method="wise", **FAST)
    with_one = [_logits(model, p) for p in prompts]
    second = wb.edit(model, facts[1], method="wise", **FAST)
    assert second.prompt_edit.tau == first.prompt_edit.tau  # the memory's threshold is the first edit's
    assert len(second.prompt_edit.side()[0]) == len(first.prompt_edit.keys) + len(second.prompt_edit.keys)
    path = second.save(tmp_path / "wise")
    second.revert()
    assert all(torch.equal(_logits(model, p), w) for p, w in zip(prompts, with_one))
    loaded = wb.load_edit(model, path)
    assert torch.equal(loaded.prompt_edit.values, second.prompt_edit.values)
    assert loaded.prompt_edit.members() == [first.prompt_edit, loaded.prompt_edit]
    loaded.revert()
    first.revert()
    assert len(model.bridge.blocks[2].mlp.out._forward_hooks) == 0


def test_a_failed_wise_edit_leaves_the_side_memory(tiny_gemma, monkeypatch):
    import workbench.editing.wise as wise

    model = tiny_gemma
    first = wb.edit(model, wb.bundled_facts()[0], method="wise", **FAST)
    probe = _logits(model, wb.bundled_facts()[0].text)

    def failing(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(wise, "corpus_keys", failing)
    with pytest.raises(KeyboardInterrupt):
        wb.edit(model, wb.bundled_facts()[1], method="wise", **FAST)
    assert model.prompt_edits == [first.prompt_edit] and active_edits(model) == [first]
    assert len(model.bridge.blocks[2].mlp.out._forward_hooks) == 1
    assert torch.equal(_logits(model, wb.bundled_facts()[0].text), probe)
    first.revert()


@pytest.mark.slow
def test_wise_flips_known_facts_in_sequence_on_default_model(gemma):
    facts = wb.bundled_facts()[:3]
    before = _weights(gemma)
    handles = [wb.edit(gemma, f, method="wise", min_prob=0) for f in facts]
    try:
        res = wb.probe(gemma, [f.text for f in facts], targets=[[f.target_true, f.target_new] for f in facts])
        for p in res.prompts:
            assert p.targets[1].prob > 0.5 and p.targets[1].prob > p.targets[0].prob
    finally:
        for h in reversed(handles):
            h.revert()
    assert all(torch.equal(before[k], v) for k, v in gemma.state_dict().items())
    assert gemma.prompt_edits == []


def test_the_routers_negatives_are_never_the_texts_perplexity_is_measured_on(tiny_gemma, monkeypatch):
    """Both WISEs train their router against corpus text; perplexity reads the held-out split."""
    import workbench.corpus as corpus
    from workbench.editing import wise, wise_paper

    asked = []
    real = corpus.wiki_texts

    def spy(split="stats", limit=None):
        asked.append(split)
        return real(split, limit)

    monkeypatch.setattr(corpus, "wiki_texts", spy)
    wise.corpus_keys(tiny_gemma, 1, texts=2)
    wise_paper.irrelevant_text(tiny_gemma, 0)
    assert asked == ["stats", "stats"]
