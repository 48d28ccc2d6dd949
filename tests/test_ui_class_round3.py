"""The class app, round three (issue 41): the probe boxes follow the fact unless edited, a fact
is chosen whole or not at all while the model is busy, a fact the model does not know is traced
towards its true object, whitespace tokens are seen, no status noise from the background
answers, rank and p labelled as what they are, number fields say when they clamp, labels fit.
Driven programmatically on the tiny random model (no browser; tests/browser drives Voila)."""

from __future__ import annotations

import dataclasses
import html
import os
import threading
import time

import pytest

pytest.importorskip("ipywidgets")

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import ipywidgets as widgets  # noqa: E402

import workbench as wb  # noqa: E402
from tests.test_ui import FACT, model  # noqa: E402,F401 - the same fact and model fixture as test_ui.py
from tests.test_ui_class import app, type_fact  # noqa: E402,F401 - the class app fixture


def _probes(fact) -> set[str]:
    return {*fact.paraphrase_prompts, *fact.neighborhood_prompts, *(i.prompt for i in fact.implication_prompts)}


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


# -- 1. one source of truth for the fact and its probes ---------------------------------------
def test_a_typed_fact_does_not_keep_the_last_typed_facts_probes(app):
    type_fact(app, "Big Ben", "{} is located in", "London", "Paris")
    first = _probes(app.state.fact)
    assert any("Big Ben" in p for p in first)
    type_fact(app, "Zorblax Quux", "{} is native to", "Mars", "Venus")  # made up: no record
    assert app.fact.error.value == "", app.fact.error.text
    fact = app.state.fact
    assert not _probes(fact) & first, _probes(fact) & first
    assert not any("Big Ben" in r["prompt"] for r in app.probes.rows)  # and none of them is scored


def test_an_edited_probe_box_is_kept_for_a_new_fact_and_the_panel_says_so(app):
    type_fact(app, "Big Ben", "{} is located in", "London", "Paris")
    app.fact.neighbours.value += "\nTower Bridge is located in"
    app.fact.subject.value = "Zorblax Quux"  # the unedited boxes were Big Ben's: emptied at once
    assert app.fact.paraphrases.value == "" and app.fact.implications.value == ""
    assert "Tower Bridge is located in" in app.fact.neighbours.value
    assert "kept as you edited" in app.fact.probe_note.value and "Neighbours" in app.fact.probe_note.value
    app.fact.prompt.value, app.fact.target_true.value = "{} is native to", "Mars"
    app.fact.use.click()
    fact = app.state.fact
    assert "Tower Bridge is located in" in fact.neighborhood_prompts
    assert not any("Big Ben" in p for p in fact.paraphrase_prompts)
    assert "kept as you edited" in app.fact.probe_note.value


def test_a_picked_facts_implications_follow_its_new_object(app):
    assert any(i.target == "Italy" for i in app.state.fact.implication_prompts)  # FACT: Paris → Rome
    app.fact.target_new.value = "Berlin"  # the implication "→ Italy" followed from Rome
    assert "Italy" not in app.fact.implications.value
    assert app.fact.paraphrases.value  # the paraphrases are about the same subject and relation: kept
    app.fact.use.click()
    assert app.state.fact.target_new == "Berlin"
    assert not any(i.target == "Italy" for i in app.state.fact.implication_prompts)
    assert app.state.fact.paraphrase_prompts == FACT.paraphrase_prompts


# -- 2. a fact is chosen whole, or not at all, while the model is busy -------------------------
def test_choosing_a_fact_while_a_task_holds_the_model_changes_nothing(model, monkeypatch):
    from workbench.ui import Workbench
    from workbench.ui import state as ui_state
    from workbench.ui.state import Task

    monkeypatch.setattr(ui_state, "GRACE", 0.05)
    wb.revert_all(model)
    facts = [FACT, *wb.bundled_facts()[:5]]
    app = Workbench(model, fact=FACT, facts=facts, background=False, answers=False)
    release = threading.Event()
    blocker = Task("Run trace", css="wb-x", error=app.trace.error, background=True, state=app.state)
    blocker.run(lambda token: release.wait(20))  # not preemptible: quick calls are refused
    deadline = time.time() + 10
    while app.state.busy_task is not blocker and time.time() < deadline:
        time.sleep(0.01)
    try:
        # The controls wait, and the busy line says why.
        assert app.fact.choices.disabled and app.fact.use.disabled
        assert "choosing a fact" in app.busy.value
        shown = (app.fact.current.value, app.fact.predictions.value, app.header.value, app.fact.subject.value)
        app.fact.choices.value = 1  # a choice the list still sent
        assert app.state.fact == FACT
        assert (app.fact.current.value, app.fact.predictions.value, app.header.value,
                app.fact.subject.value) == shown
        assert "busy (Run trace)" in app.fact.error.text and "stays" in app.fact.error.text
        # The moment before the task says it holds the model: the probe is refused, and then too
        # the fact is refused whole, the fields put back.
        monkeypatch.setattr(app.fact, "_busy_with", lambda: None)
        app.fact.pick(facts[2])
        assert app.state.fact == FACT and app.fact.current.value == shown[0]
        assert app.fact.subject.value == FACT.subject and app.fact.target_new.value == FACT.target_new
        assert app.fact.paraphrases.value == "\n".join(FACT.paraphrase_prompts)
        assert "was not changed" in app.fact.error.text
        monkeypatch.undo()
    finally:
        release.set()
        blocker.join(20)
    deadline = time.time() + 10
    while app.state.busy_task is not None and time.time() < deadline:
        time.sleep(0.01)
    assert not app.fact.choices.disabled and not app.fact.use.disabled
    app.fact.choices.value = 1
    assert app.state.fact.subject == facts[1].subject and facts[1].subject in app.header.value
    wb.revert_all(model)


# -- 4. a fact the model does not know; whitespace tokens ------------------------------------
def test_a_fact_the_model_does_not_know_is_traced_towards_its_true_object(app, model):
    from workbench.facts import top_begins_true_object
    from workbench.locate.setup import answer_token

    top = wb.probe(model, FACT.text, top_k=1)[0].top[0].token
    assert not top_begins_true_object(model, FACT, top)  # the random tiny model does not know it
    app.trace.samples.value, app.trace.window.value = 2, 2
    app.trace.task.button.click()
    assert app.trace.error.value == "", app.trace.error.text
    assert app.state.trace.answer_id == answer_token(model, "Paris")
    summary = html.unescape(app.trace.summary.value)
    assert "does not know this fact" in summary and "true object 'Paris'" in summary
    colorbar = app.trace.figure_widgets["mlp"].data[0].colorbar.title.text
    assert colorbar == f"p({app.state.trace.answer.strip()})" and colorbar != "p()"


def test_whitespace_tokens_are_drawn_visibly(app, model):
    from workbench.probing import TokenProb
    from workbench.ui.widgets import quoted, visible

    assert (visible(" "), visible("\n"), visible(" Paris"), quoted(" ")) == ("⎵", "↵", " Paris", "'⎵'")
    app.trace.samples.value, app.trace.window.value = 2, 2
    app.trace.task.button.click()
    spaced = dataclasses.replace(app.state.trace, answer=" ",
                                 tokens=[" " if i == 1 else t for i, t in enumerate(app.state.trace.tokens)])
    app.trace.show(spaced)
    assert "'⎵'" in html.unescape(app.trace.summary.value)
    heatmap = app.trace.figure_widgets["mlp"].data[0]
    assert heatmap.colorbar.title.text == "p(⎵)"
    assert heatmap.y[1].startswith("⎵")
    assert "→ '⎵'" in app.trace.figure_widgets["mlp"].layout.title.text
    # The Fact tab's top tokens and its "top answer".
    result = wb.probe(model, FACT.text, targets=[FACT.target_true, FACT.target_new], top_k=2)[0]
    result = dataclasses.replace(result, top=[TokenProb(" ", 0.5), *result.top[1:]])
    app.fact._show_predictions(FACT, result, 0)
    assert "top answer is '⎵'" in html.unescape(app.fact.predictions.value)
    assert "<td style='padding:2px 8px'>⎵</td>" in app.fact.predictions.value


# -- 8. no status noise -------------------------------------------------------------------------
def test_the_background_answers_make_no_busy_line_and_no_full_bar(app, monkeypatch):
    task = app.probes.answer_task
    lines, bars = [], []
    app.state.on("busy", lambda: lines.append((app.state.busy_task is task, app.busy.value)))
    real = task._step
    monkeypatch.setattr(task, "_step", lambda steps: (real(steps), bars.append(
        (task.bar.layout.visibility, task.bar.value, task.bar.max))))
    app.probes.answers_before.clear()
    app.probes.run_answers()
    assert any(held for held, _ in lines) and bars  # the answers held the model, step by step
    assert all(text == "" for _, text in lines), lines
    assert all(visibility == "hidden" for visibility, _, _ in bars), bars
    assert app.probes.answers_now


def test_a_heartbeat_after_the_release_does_not_take_the_busy_line_back(model):
    from workbench.ui.state import State, Task
    from workbench.ui.widgets import ErrorLine

    state = State(model)
    task = Task("Apply edit", css="wb-x", error=ErrorLine(), background=False, state=state)
    state.report_busy(task, "editing…")
    state.report_busy(None, "")
    state.report_busy(task, "editing… 3 s", holding=True)  # a heartbeat that checked a moment before
    assert state.busy_task is None


# -- 10. rank and p -------------------------------------------------------------------------------
def test_rank_and_p_are_labelled_as_what_they_are(app, model):
    assert len(wb.probing.target_ids(model, "The Zorblax Quux plays the", "bassoon")) > 1
    type_fact(app, "Zorblax Quux", "The {} plays the", "bassoon", "Paris")
    knows = html.unescape(app.fact.predictions.value)
    assert "is rank" not in knows and "with p" not in knows
    assert "'bassoon': first token ranked" in knows
    assert "p per token" in knows and "geometric mean over its 2 tokens" in knows
    assert "'Paris': first token ranked" in knows and "per token" not in knows.split("'Paris'")[1].split(")")[0]
    assert "p per token (geometric mean)" in knows and "rank of its first token" in knows  # the table's headers


# -- 11. number fields say when they clamp -------------------------------------------------------
@pytest.mark.parametrize("panel, name, typed, kept", [
    ("trace", "samples", 250, 100), ("trace", "samples", 0, 1), ("trace", "noise", 500.0, 100.0),
    ("compare", "limit", 5000, 1000), ("memories", "top_k", 999, 200),
    ("memories", "kn_steps", 0, 1),
])
def test_number_fields_say_when_they_clamp(app, panel, name, typed, kept):
    from workbench.ui.app import _holds

    field = getattr(getattr(app, panel), name)
    field.value = typed
    assert field.value == kept
    assert f"{typed:g} is" in field.note.value and f"using {kept:g}" in field.note.value
    assert _holds(app.panels[panel], field.note)  # on the page, beside its field
    field.value = kept - 1 if typed > kept else kept + 1  # a value in range: the note goes
    assert field.note.value == ""


# -- 12. labels fit ----------------------------------------------------------------------------
def test_long_labels_get_the_room_they_need(app):
    cut = []
    for w in _walk(app):
        text = getattr(w, "description", "") or ""
        if isinstance(w, (widgets.Button, widgets.ToggleButton)):
            width = w.layout.width or ""
            # "auto" and "max-content" both size the button to its text.
            room = int(width[:-2]) if width.endswith("px") else (10_000 if width in ("auto", "max-content") else 148)
            if 8 * len(text) + 20 > room:
                cut.append(text)
        elif isinstance(w, widgets.Checkbox):
            if len(text) > 30 and w.layout.width not in ("auto", "max-content"):
                cut.append(text)
        elif hasattr(getattr(w, "style", None), "description_width") and len(text) > 8:
            if not w.style.description_width:
                cut.append(text)
    assert not cut, cut
