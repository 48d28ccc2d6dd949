"""Attention knockout and subject enrichment (Geva et al. 2023) on the tiny models of two families.

The fast path recomputes only the last position in one batch; the references here
run the whole prompt through the model with the attention pattern masked by hand.
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.blocks import answer_probs
from workbench.locate.enrichment import EnrichmentResult, enrichment, table_attributes
from workbench.locate.knockout import Block, KnockoutResult, knockout, knockout_probs, source_groups

FACT = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


@pytest.fixture(params=["tiny_gemma", "tiny_llama"])
def model(request):
    return request.getfixturevalue(request.param)


def hand_masked_prob(model, tokens, sources, layers, answer_id) -> float:
    """p(answer) from a full forward pass whose attention pattern at the last query row has the
    blocked keys zeroed and the rest renormalised (what −inf before the softmax means)."""
    def mask(pattern, hook=None):
        pattern = pattern.clone()
        row = pattern[:, :, -1, :]
        row[..., list(sources)] = 0
        total = row.sum(-1, keepdim=True)
        pattern[:, :, -1, :] = torch.where(total > 0, row / total.clamp_min(1e-30), torch.zeros_like(row))
        return pattern

    hooks = [(f"blocks.{layer}.attn.hook_pattern", mask) for layer in layers]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        hidden = model.hidden(tokens)[:, -1]
    return float(answer_probs(model, hidden, answer_id)[0])


def test_blocking_nothing_is_the_clean_run_bitwise(model):
    tokens = model.tokens(FACT.text)
    n = tokens.shape[1]
    # Row 1 blocks edges at every layer, so the score hooks run on every layer for row 2 too.
    blocks = [Block((), ()), Block(tuple(range(n - 1)), tuple(range(model.n_layers))), Block((), tuple(range(model.n_layers)))]
    probs, answer_id = knockout_probs(model, tokens, blocks)
    assert probs[0] == probs[2] and probs[0] != probs[1]
    r = knockout(model, FACT, groups={"none": []})
    # Rows of one batch may meet other kernels' summation order on several threads: equal to rounding.
    assert r.changes["none"] == pytest.approx([0.0] * model.n_layers, abs=1e-5)
    assert r.probs["none"] == pytest.approx([r.clean_prob] * model.n_layers, rel=1e-5)
    # And the unblocked row is the model's own forward pass (a different batch shape: equal to rounding).
    with torch.no_grad():
        full = float(answer_probs(model, model.hidden(tokens)[:, -1], answer_id)[0])
    assert r.clean_prob == pytest.approx(full, rel=1e-4)


def test_every_edge_at_every_layer_matches_a_hand_masked_forward(model):
    tokens = model.tokens(FACT.text)
    n, layers = tokens.shape[1], tuple(range(model.n_layers))
    cases = [
        (tuple(range(n)), layers),                     # every edge into the last token: no attention at all
        (tuple(range(n - 1)), layers),                 # all but the last token's own
        ((2, 3), (1, 2)),                              # the subject, a window
        ((n - 1,), (model.n_layers - 1,)),             # the last token, top layer only
    ]
    probs, answer_id = knockout_probs(model, tokens, [Block((), ())] + [Block(s, l) for s, l in cases])
    for (sources, ls), got in zip(cases, probs[1:]):
        want = hand_masked_prob(model, tokens, sources, ls, answer_id)
        assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-9), (sources, ls)
    assert float(probs[1]) != pytest.approx(float(probs[0]), rel=1e-3)  # the cut did something


def test_knockout_result_windows_groups_and_serialisation(model):
    r = knockout(model, FACT, window=3)
    n = len(r.tokens)
    assert r.layers == list(range(model.n_layers))
    assert r.windows[0] == [0, 2] and r.windows[1] == [0, 3] and r.windows[-1] == [model.n_layers - 2, model.n_layers]
    assert set(r.changes) == {"subject", "other", "last"} and r.positions["last"] == [n - 1]
    start, end = r.subject_range
    assert r.positions["subject"] == list(range(start, end))
    assert not set(r.positions["other"]) & (set(range(start, end)) | {n - 1} | set(r.spared))
    for g in r.changes:
        for p, c in zip(r.probs[g], r.changes[g]):
            assert c == pytest.approx((p - r.clean_prob) / r.clean_prob, rel=1e-9, abs=1e-12)
    back = json.loads(r.to_json())
    assert back["changes"] == r.changes and isinstance(r, KnockoutResult)
    frame = r.to_pandas()
    assert len(frame) == 3 * model.n_layers and {"group", "layer", "change", "prob"} <= set(frame.columns)
    # A chosen answer is scored instead of the top-1.
    paris = knockout(model, FACT, window=2, answer="Paris", groups=["subject"])
    assert paris.answer.strip().startswith("P") and list(paris.changes) == ["subject"]


def test_the_attention_sink_is_spared_unless_asked():
    groups, spared = source_groups(10, 2, 4, True)
    assert spared == [0] and 0 not in groups["other"]
    groups, spared = source_groups(10, 2, 4, True, spare_bos=False)
    assert spared == [] and 0 in groups["other"]
    groups, spared = source_groups(10, 0, 2, False)
    assert spared == [] and groups["other"] == [2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("window", [0, -1, 5, 2.5, True, "3"])
def test_a_bad_window_is_one_line_before_any_work(tiny_gemma, monkeypatch, window):
    ko = importlib.import_module("workbench.locate.knockout")  # the package's `knockout` is the function

    monkeypatch.setattr(ko, "knockout_probs", lambda *a, **k: pytest.fail("ran before refusing"))
    with pytest.raises(WorkbenchError) as info:
        knockout(tiny_gemma, FACT, window=window)  # tiny-gemma3 has 4 layers
    assert "window" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("fact, what", [
    (("The Louvre is located in the city of", "Eiffel Tower"), "not in the prompt"),
    (("The city of {}", "Paris"), "ends the prompt"),
])
def test_a_bad_subject_is_one_line_before_any_work(tiny_llama, monkeypatch, fact, what):
    ko = importlib.import_module("workbench.locate.knockout")  # the package's `knockout` is the function

    monkeypatch.setattr(ko, "knockout_probs", lambda *a, **k: pytest.fail("ran before refusing"))
    with pytest.raises(WorkbenchError, match=what) as info:
        knockout(tiny_llama, fact)
    assert "\n" not in str(info.value)


def test_bad_groups_are_refused(tiny_llama):
    with pytest.raises(WorkbenchError, match="unknown knockout group"):
        knockout(tiny_llama, FACT, groups=["verb"])
    with pytest.raises(WorkbenchError, match="position"):
        knockout(tiny_llama, FACT, groups={"far": [99]})


def test_enrichment_counts_attribute_tokens(model):
    r = enrichment(model, FACT, top_k=20)
    assert isinstance(r, EnrichmentResult) and len(r.rate) == len(r.top) == model.n_layers
    assert r.position == r.subject_range[1] - 1 and all(len(t) == 20 for t in r.top)
    assert {"Paris", "France", "Europe"} <= set(r.attributes)
    # Make one of layer 0's top tokens an attribute: the rate counts it (and its case / space variants).
    word = next(t.strip() for t in r.top[0] if t.strip().isalpha() and len(t.strip()) >= 3 and t.strip().lower()
                not in {"eiffel", "tower", "the", "and"})
    mine = enrichment(model, FACT, top_k=20, attributes=[word.upper()[0] + word[1:]])
    assert mine.rate[0] >= 1 / 20 and any(h.strip().lower() == word.lower() for h in mine.hits[0])
    assert all(r_ == len(h) / 20 for r_, h in zip(mine.rate, mine.hits))
    assert json.loads(mine.to_json())["rate"] == mine.rate and len(mine.to_pandas()) == model.n_layers


def test_enrichment_refuses_bad_input(tiny_llama):
    with pytest.raises(WorkbenchError, match="not in the prompt"):
        enrichment(tiny_llama, ("The Louvre is in", "Eiffel Tower"))
    with pytest.raises(WorkbenchError, match="attributes"):
        enrichment(tiny_llama, FACT, attributes="Paris")
    with pytest.raises(WorkbenchError, match="top_k"):
        enrichment(tiny_llama, FACT, top_k=0)


def test_table_attributes():
    assert table_attributes("Paris")[:2] == ["France", "Paris"]
    assert {"Europe", "Euro", "French"} <= set(table_attributes("France"))
    assert table_attributes("Eiffel Tower") == []


def test_figures(tiny_gemma):
    from workbench.figures.knockout import enrichment_figure, knockout_figure

    r = knockout(tiny_gemma, FACT)
    fig = knockout_figure(r)
    assert [t.name for t in fig.data] == ["subject → last", "non-subject → last", "last → last"]
    assert list(fig.data[0].y) == pytest.approx([100 * c for c in r.changes["subject"]])
    e = enrichment(tiny_gemma, FACT)
    assert list(enrichment_figure(e).data[0].y) == pytest.approx([100 * x for x in e.rate])


def test_cli_json(capsys):
    from workbench.cli import main

    code = main(["knockout", "--subject", "Eiffel Tower", "--prompt", "The {} is located in the city of",
                 "--model", "tiny-gemma3", "--window", "2", "--object", "Paris", "--enrichment", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["window"] == 2 and set(out["changes"]) == {"subject", "other", "last"}
    assert len(out["changes"]["subject"]) == 4 and len(out["enrichment"]["rate"]) == 4
    assert "France" in out["enrichment"]["attributes"]


def test_cli_refuses_a_bad_window_in_one_line(capsys):
    from workbench.cli import main

    code = main(["knockout", "--subject", "Eiffel Tower", "--prompt", "The {} is in", "--model", "tiny-gemma3",
                 "--window", "0", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "--window" in err and err.count("\n") == 1


def test_ui_panel_draws(tiny_gemma):
    pytest.importorskip("ipywidgets")
    from workbench.ui import Workbench

    app = Workbench(tiny_gemma, fact=FACT, facts=[FACT], background=False)
    titles = [app.tabs.get_title(i) for i in range(len(app.tabs.children))]
    assert "Knockout" in titles and "wb-knockout-panel" in app.knockout._dom_classes
    panel = app.knockout
    panel.task.button.click()
    assert panel.error.text == "", panel.error.text
    assert len(panel.figures.children) == 2 and "Answer" in panel.summary.value
    assert [t.name for t in panel.figures.children[0].data][0] == "subject → last"
    panel.window.value = 99
    panel.task.button.click()
    assert "window" in panel.error.text.lower() and "\n" not in panel.error.text
    app.state.set_fact(Fact("Steve Jobs", "{} was the founder of", "Apple"))
    assert panel.figures.children == ()


def test_comparison_figure_overlays_before_and_now(tiny_gemma):
    from workbench.figures.knockout import knockout_comparison_figure

    before = knockout(tiny_gemma, FACT, answer="Paris")
    now = knockout(tiny_gemma, FACT, answer="Rome")
    fig = knockout_comparison_figure(before, now)
    names = [t.name for t in fig.data]
    assert names[:2] == ["subject → last: before", "subject → last: now"] and len(names) == 6
    assert fig.data[0].line.dash == "dash" and list(fig.data[1].y) == pytest.approx([100 * c for c in now.changes["subject"]])


def test_ui_after_an_edit_draws_before_and_now_and_a_click_opens_memories(tiny_gemma):
    pytest.importorskip("ipywidgets")
    import workbench as wb
    from workbench.editing import active_edits
    from workbench.ui import Workbench

    app = Workbench(tiny_gemma, fact=FACT, facts=[FACT], background=False)
    panel = app.knockout
    panel.with_enrichment.value = False
    panel.task.button.click()
    assert panel.before is None and len(panel.figures.children) == 1
    unedited = knockout(tiny_gemma, FACT, window=int(panel.window.value), answer="Paris")
    h = wb.edit(tiny_gemma, FACT, method="rome", layers=[1], samples=1500, n_prefixes=2, steps=3,
                check_known=False, min_prob=0)
    try:
        app.state.emit("weights")
        assert "run it again" in panel.summary.value
        panel.task.button.click()
        assert panel.error.text == "", panel.error.text
        before, now = panel.before, panel.result
        # Before: the unedited weights towards the true object (as before the edit, to rounding); now: the new object.
        assert before.answer.strip() and "Paris".startswith(before.answer.strip())
        assert "Rome".startswith(now.answer.strip())
        assert before.changes["subject"] == pytest.approx(unedited.changes["subject"], rel=1e-4, abs=1e-6)
        assert now.changes["subject"] != pytest.approx(before.changes["subject"], rel=1e-3)
        names = [t.name for t in panel.figures.children[0].data]
        assert "subject → last: before" in names and "subject → last: now" in names
        assert "Before" in panel.summary.value and "Now" in panel.summary.value
        assert active_edits(tiny_gemma) == [h]  # the unedited run put the edit back
    finally:
        h.revert()
    # A click on a layer opens the memories at the subject's last token there.
    panel.select(2)
    assert app.state.selection == (now.subject_range[1] - 1, 2) and "Memories" in panel.selection.value
