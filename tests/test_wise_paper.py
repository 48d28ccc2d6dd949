"""WISE as published: shards, the Ties merge, routing per input, exact revert."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.core.activations import replay_below
from workbench.editing import wise_paper as wp

FAST = dict(steps=2, n_prefixes=0, min_prob=0)


def test_ties_merge_equals_its_formula_on_a_small_example():
    a = torch.tensor([0.5, -3.0, 2.0, 0.1])
    b = torch.tensor([1.5, 1.0, -1.0, 0.0])
    # density 0.5 keeps the two largest entries of each: a -> [0, -3, 2, 0], b -> [1.5, 1, 0, 0].
    # Weighted by 1/2: sums per entry 0.75, -1.0, 1.0, 0 -> signs +, -, +, + (ties count as +).
    # Entry 0: only b agrees (+) -> 0.75 / 0.5 = 1.5; entry 1: a (-) -> -1.5 / 0.5 = -3;
    # entry 2: a (+) -> 2; entry 3: nothing kept -> 0.
    merged = wp.ties_merge([a, b], [0.5, 0.5], 0.5)
    assert torch.allclose(merged, torch.tensor([1.5, -3.0, 2.0, 0.0]))
    # Changes on disjoint entries merge to their sum; agreeing ones to their mean.
    assert torch.equal(wp.ties_merge([torch.tensor([2.0, 0.0]), torch.tensor([0.0, -1.0])], [0.5, 0.5], 1.0),
                       torch.tensor([2.0, -1.0]))
    assert torch.equal(wp.ties_merge([torch.tensor([2.0]), torch.tensor([4.0])], [0.5, 0.5], 1.0), torch.tensor([3.0]))


def test_shard_masks_are_fixed_and_differ_between_shards():
    m0, m1 = wp.shard_mask((64, 64), 0, 0.2), wp.shard_mask((64, 64), 1, 0.2)
    assert torch.equal(m0, wp.shard_mask((64, 64), 0, 0.2)) and not torch.equal(m0, m1)
    assert 0.17 < float(m0.float().mean()) < 0.23


def test_replayed_blocks_give_the_same_hidden_states_and_refuse_other_tokens(tiny_gemma):
    ids = torch.tensor([tiny_gemma.encode("The Eiffel Tower is located in the city of")])
    full = tiny_gemma.hidden(ids)
    with replay_below(tiny_gemma, 2, ids):
        assert torch.equal(tiny_gemma.hidden(ids), full)
        with pytest.raises(RuntimeError, match="other tokens"):
            tiny_gemma.hidden(ids[:, :-1])
    assert torch.equal(tiny_gemma.hidden(ids), full)


def _outputs(model, prompts):
    return [wb.probe(model, p, top_k=3)[0].top[0].prob for p in prompts]


@pytest.mark.slow
def test_shards_merge_and_reverting_gives_back_each_earlier_memory_exactly(tiny_gemma):
    facts = wb.bundled_facts()[:6]
    settings = dict(FAST, save_freq=2, merge_freq=4)
    ids = torch.tensor([tiny_gemma.encode(facts[0].text)])
    clean = tiny_gemma.hidden(ids)
    handles, states = [], []
    for f in facts:
        handles.append(wb.edit(tiny_gemma, f, method="wise-paper", **settings))
        states.append(tiny_gemma.hidden(ids))
    assert [h.info["shard"] for h in handles] == [0, 0, 1, 1, 2, 2]
    first = handles[0].prompt_edit
    memories = first.memories(tuple(wp.WisePaperEdit.module(tiny_gemma, first.layer).weight.shape))
    # Shards 0 and 1 are full and merged (merge_freq = 2 shards); shard 2 is full, not yet merged.
    assert len(memories) == 2
    shape = memories[0].delta.shape
    deltas = []
    for shard in (0, 1):
        d = torch.zeros(shape)
        d[first.mask(tuple(shape), shard)] += sum(h.prompt_edit.values for h in handles if h.info["shard"] == shard)
        deltas.append(d)
    assert torch.allclose(memories[0].delta, wp.ties_merge(deltas, [0.5, 0.5], wp.PAPER["density"]))
    assert memories[0].threshold == pytest.approx(
        wp.PAPER["act_ratio"] * min(h.info["in_scope"] for h in handles[:4]))
    for h, state in zip(reversed(handles), reversed([clean, *states[:-1]])):
        h.revert()
        assert torch.equal(tiny_gemma.hidden(ids), state)
    assert tiny_gemma.prompt_edits == []


def test_an_input_it_does_not_route_reads_the_unedited_weights_bitwise(tiny_gemma):
    fact = wb.bundled_facts()[0]
    ids = torch.tensor([tiny_gemma.encode("Completely unrelated words about the weather")])
    clean = tiny_gemma.hidden(ids)
    with wb.edit(tiny_gemma, fact, method="wise-paper", **FAST, act_ratio=10.0) as h:
        # act_ratio 10: no input's score reaches ten times the edit's own.
        assert h.info["threshold"] == pytest.approx(10 * h.info["in_scope"])
        assert torch.equal(tiny_gemma.hidden(ids), clean)


def test_scores_leave_padding_out_and_the_forward_pass_gives_its_mask(tiny_gemma):
    from workbench.probing import _pad_batch, _pad_id

    fact = wb.bundled_facts()[0]
    with wb.edit(tiny_gemma, fact, method="wise-paper", **FAST) as h:
        mem = h.prompt_edit
        delta = mem.memories((tiny_gemma.d_model, tiny_gemma.d_mlp))[-1].delta
        torch.manual_seed(0)
        inputs, base = torch.randn(2, 7, tiny_gemma.d_mlp), torch.randn(2, 7, tiny_gemma.d_model)
        valid = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1] * 7]).bool()
        padded = mem.scores(inputs, base, delta, valid)
        alone = mem.scores(inputs[:1, :3], base[:1, :3], delta, None)
        assert torch.allclose(padded[0], alone[0]) and not torch.allclose(padded[0], mem.scores(inputs, base, delta, None)[0])
        # Inputs longer than long_input positions are scored by their largest position (the code's rule).
        mem.settings["long_input"] = 5
        longest = mem.scores(inputs, base, delta, valid)
        assert torch.allclose(longest[0], padded[0]) and longest[1] > padded[1]
        mem.settings["long_input"] = 0
        assert torch.allclose(mem.scores(inputs, base, delta, valid), padded)
        mem.settings["long_input"] = wp.LONG_INPUT
        ids, mask = _pad_batch([tiny_gemma.encode(fact.text), tiny_gemma.encode("A longer sentence " * 3)],
                               _pad_id(tiny_gemma))
        tiny_gemma.hidden(ids, mask)
        assert torch.equal(mem.mask_now, mask)


def test_bad_settings_are_refused_before_anything_changes(tiny_gemma):
    fact = wb.bundled_facts()[0]
    with pytest.raises(wb.WorkbenchError, match="no setting 'tau'"):
        wb.edit(tiny_gemma, fact, method="wise-paper", tau=1.0, **FAST)
    with pytest.raises(wb.WorkbenchError, match="multiple of save_freq"):
        wb.edit(tiny_gemma, fact, method="wise-paper", save_freq=3, merge_freq=4, **FAST)
    with pytest.raises(wb.WorkbenchError, match="mask_ratio"):
        wb.edit(tiny_gemma, fact, method="wise-paper", mask_ratio=1.5, **FAST)
    assert tiny_gemma.prompt_edits == []


@pytest.mark.slow
def test_100_sequential_edits_with_shards_and_merges_revert_bitwise(tiny_gemma):
    facts = wb.bundled_facts()[:100]
    ids = torch.tensor([tiny_gemma.encode(facts[0].text)])
    clean = tiny_gemma.hidden(ids)
    handles = [wb.edit(tiny_gemma, f, method="wise-paper", save_freq=30, merge_freq=60, **FAST) for f in facts]
    assert handles[-1].info["shard"] == 3
    for h in reversed(handles):
        h.revert()
    assert torch.equal(tiny_gemma.hidden(ids), clean) and tiny_gemma.prompt_edits == []


@pytest.mark.slow
def test_wise_paper_flips_a_known_fact_on_the_default_model_and_leaves_a_neighbour(gemma):
    fact = wb.bundled_facts()[0]
    clean = gemma.hidden(torch.tensor([gemma.encode(fact.neighborhood_prompts[0])]))
    with wb.edit(gemma, fact, method="wise-paper", min_prob=0) as h:
        res = wb.probe(gemma, fact.text, targets=[fact.target_new, fact.target_true])[0]
        assert res.target(fact.target_new).prob > res.target(fact.target_true).prob, h.info
        # The neighbour's score stays under the threshold: it reads the unedited weights, bitwise.
        assert torch.equal(gemma.hidden(torch.tensor([gemma.encode(fact.neighborhood_prompts[0])])), clean)
    assert gemma.prompt_edits == []
