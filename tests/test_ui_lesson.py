"""Lesson mode (issue 41): four step cards over facts prepared ahead. A card's click selects the
fact and shows the prepared trace, memories, key profile and knockout without a model call; a
stale or corrupt lesson file is ignored with a sentence and the app works as before; a prepared
entry is what the panels compute. On the tiny random model (tests/browser walks the cards)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import workbench as wb  # noqa: E402
from tests.test_ui import model  # noqa: E402,F401 - the tiny model fixture of test_ui.py
from workbench.ui import lesson as lesson_mod  # noqa: E402
from workbench.ui.lesson import STEPS, fact_key, lesson_facts, prepare_fact, read_lesson, write_lesson  # noqa: E402

#: The Eiffel Tower and one bundled fact: enough for every path, quick on the tiny model.
N_FACTS = 2


@pytest.fixture(scope="module")
def lesson_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("lesson") / f"{model.name}.json"
    wb.revert_all(model)
    return write_lesson(model, path, lesson_facts()[:N_FACTS])


def make_app(model, lesson, **kwargs):
    from workbench.ui import Workbench

    wb.revert_all(model)
    app = Workbench(model, lesson=lesson, background=False, answers=False, **kwargs)
    return app


@pytest.fixture
def app(model, lesson_file):
    a = make_app(model, read_lesson(model, [lesson_file]))
    yield a
    wb.revert_all(model)


def no_compute(monkeypatch):
    """Every panel's compute function raises: what shows must come from the lesson file."""
    def refuse(*args, **kwargs):
        raise AssertionError("computed, not prepared")

    for module, names in (("workbench.ui.trace", ("trace", "cached_trace")),
                          ("workbench.ui.memories", ("memories", "enrichment", "key_profile")),
                          ("workbench.ui.knockout", ("knockout", "enrichment"))):
        for name in names:
            monkeypatch.setattr(f"{module}.{name}", refuse)


def test_the_four_cards_are_there_in_order(app):
    strip = app.lesson
    assert strip.toggle.value and strip.body.layout.display == ""
    cards = strip.cards.children
    assert [f"wb-lesson-card-{n}" in c._dom_classes for n, c in enumerate(cards, 1)] == [True] * 4
    titles = [c.children[0].value for c in cards]
    assert all(f"{n} · " in t for n, t in enumerate(titles, 1))
    assert [s[0] for s in STEPS] == ["Does it know?", "Where?", "Edit", "Did its knowledge change?"]
    assert all(s[0].replace("?", "") in t.replace("?", "") for s, t in zip(STEPS, titles))
    assert "prepared ahead" in strip.note.value and str(N_FACTS) in strip.note.value
    assert "not instant" in titles[2]  # the Edit card says an edit takes seconds on a CPU
    strip.toggle.value = False
    assert strip.body.layout.display == "none"


def test_the_switch_is_off_by_default(model, lesson_file, monkeypatch):
    monkeypatch.delenv("WORKBENCH_LESSON", raising=False)
    a = make_app(model, None)
    assert a.lesson is not None and not a.lesson.toggle.value
    assert a.lesson._lesson is None  # no lesson file read until it is switched on


def test_a_card_selects_the_fact_and_shows_prepared_results_without_computing(app, monkeypatch):
    strip, prepared = app.lesson, app.lesson.lesson.prepared
    no_compute(monkeypatch)
    strip.choice.value = 2  # the second lesson fact: picked, step 1's tab (Fact) opens
    fact = strip.fact
    assert fact_key(app.state.fact) == fact_key(fact) and app.tabs.selected_index == 0
    assert fact.subject in app.fact.current.value
    p = prepared[fact_key(fact)]

    strip.buttons[1].click()  # 2 · Where? → Trace
    assert strip.error.value == "", strip.error.text
    assert app.tab_name(app.tabs.selected_index) == "trace"
    assert app.trace.error.value == "", app.trace.error.text
    assert "prepared ahead" in app.trace.task.status.value and "Run trace" in app.trace.task.status.value
    assert app.state.trace is p.trace and "mlp" in app.trace.figure_widgets
    assert "kinds=('mlp',)" in app.trace.code.code and "cache=True" in app.trace.code.code

    app.show_tab("memories")  # opening the tab fills it too
    assert app.memories.report is p.memories
    assert (app.memories.layer.value, app.memories.position.value) == (p.layer, p.position)
    assert "prepared ahead" in app.memories.header.value
    assert f"Key {p.profile.key}" in app.memories.profile.value

    app.lesson.go(2, "knockout")
    assert app.knockout.result is p.knockout and app.knockout.figures.children
    assert "prepared ahead" in app.knockout.task.status.value

    strip.buttons[3].click()  # 4 · Did its knowledge change? → Probes, letters "before" handed over
    assert app.tab_name(app.tabs.selected_index) == "probes"
    assert all(app.probes.knowledge.before[k] == v for k, v in p.letters.items())


def test_greedy_answers_wait_for_the_probes_tab_in_lesson_mode(app, monkeypatch):
    """They held the cores while the class clicked through prepared results (issue 41)."""
    started = []
    monkeypatch.setattr(app.probes.answer_task, "run", lambda *a, **k: started.append(a))
    app.probes.answers_on.value = True
    app.lesson.choice.value = 2  # step 1: the Fact tab
    app.lesson.buttons[1].click()  # step 2: Trace
    app.probes.run_answers()  # what a probe refresh starts
    assert started == [] and app.probes._answers_held
    app.lesson.buttons[3].click()  # step 4 opens Probes: the answers start
    assert len(started) == 1 and not app.probes._answers_held
    app.show_tab("trace")
    app.probes.run_answers()
    assert len(started) == 1
    app.lesson.toggle.value = False  # out of lesson mode: nothing held any more
    assert len(started) == 2
    app.probes.run_answers()
    assert len(started) == 3


def test_run_recomputes_and_other_settings_are_not_prepared(app):
    strip = app.lesson
    strip.buttons[1].click()
    app.trace.task.button.click()  # Run trace: computed (or from the trace cache), no longer "prepared"
    assert app.trace.error.value == "", app.trace.error.text
    assert "prepared ahead" not in app.trace.task.status.value
    app.trace.samples.value = 2  # not the lesson's setting (set before the pick, which fills every panel)
    strip.choice.value = 2
    strip.buttons[1].click()
    assert not app.trace.figure_widgets and "settings differ" in app.trace.task.status.value


def test_nothing_prepared_is_shown_on_edited_weights(app, model):
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"  # the random tiny model does not reach the new object
    app.edit.task.button.click()
    assert wb.active_edits(model)
    app.lesson.choice.value = 2
    app.lesson.go(2)
    assert app.lesson.prepared_now() is None and "prepared ahead" not in app.trace.task.status.value


def test_a_prepared_entry_is_what_the_panels_compute(model, lesson_file):
    """Recompute the second fact's entry from the model and compare it with the file's."""
    stored = json.loads(lesson_file.read_text())["facts"][1]
    fact = lesson_facts()[1]
    again = prepare_fact(model, fact)
    assert again["trace_key"] == stored["trace_key"]
    np.testing.assert_allclose(again["trace"]["scores"]["mlp"], stored["trace"]["scores"]["mlp"], atol=1e-6)
    assert [u["key"] for u in again["memories"]["sub_updates"]] == [u["key"] for u in stored["memories"]["sub_updates"]]
    assert again["memories"]["layer"] == stored["memories"]["layer"]
    assert again["profile"]["key"] == stored["profile"]["key"]
    assert again["profile"]["contexts"] == stored["profile"]["contexts"]
    for group, changes in stored["knockout"]["changes"].items():
        np.testing.assert_allclose(again["knockout"]["changes"][group], changes, atol=1e-6)
    assert again["letters"] == stored["letters"]
    # And the panel's own click computes that trace: the same scores as the prepared one.
    app = make_app(model, read_lesson(model, [lesson_file]))
    app.lesson.choice.value = 2
    app.lesson.go(2)
    app.trace.task.button.click()
    np.testing.assert_allclose(app.state.trace.scores["mlp"], stored["trace"]["scores"]["mlp"], atol=1e-6)


@pytest.mark.parametrize("change, why", [
    (lambda d: d.update(fingerprint="0000"), "prepared for"),
    (lambda d: d.update(version=lesson_mod.VERSION + 1), "version"),
    (lambda d: d["settings"]["memories"].update(top_k=3), "settings changed"),
])
def test_a_stale_lesson_is_ignored_with_a_sentence(model, lesson_file, tmp_path, change, why):
    data = json.loads(lesson_file.read_text())
    change(data)
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(data))
    lesson = read_lesson(model, [stale])
    assert not lesson.prepared and why in lesson.note and "computes as usual" in lesson.note
    assert [f.subject for f in lesson.facts] == [f.subject for f in lesson_facts()]  # the facts stay
    # A current file after it is still used, and the note says what was skipped.
    lesson = read_lesson(model, [stale, lesson_file])
    assert lesson.prepared and lesson.source == lesson_file and why in lesson.note


@pytest.mark.parametrize("text", ["{not json", None])
def test_a_corrupt_lesson_gives_a_clear_error_and_the_app_works(model, lesson_file, tmp_path, text):
    bad = tmp_path / "bad.json"
    if text is None:  # a whole header, a broken entry
        data = json.loads(lesson_file.read_text())
        del data["facts"][0]["memories"]
        text = json.dumps(data)
    bad.write_text(text)
    lesson = read_lesson(model, [bad])
    assert not lesson.prepared and "corrupt" in lesson.note and "ignored" in lesson.note
    app = make_app(model, lesson)
    assert "corrupt" in app.lesson.note.value
    app.lesson.go(2)  # nothing prepared: the Trace tab opens and Run trace computes as before
    assert app.tab_name(app.tabs.selected_index) == "trace" and not app.trace.figure_widgets
    app.trace.task.button.click()
    assert app.trace.error.value == "", app.trace.error.text
    assert "mlp" in app.trace.figure_widgets


def test_a_lesson_that_cannot_be_read_leaves_the_app_usable(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("workbench.ui.lesson_strip.read_lesson", broken)
    monkeypatch.delenv("WORKBENCH_LESSON", raising=False)
    app = make_app(model, None)
    app.lesson.toggle.value = True
    assert "disk on fire" in app.lesson.error.text and "could not be read" in app.lesson.note.value
    app.lesson.buttons[1].click()
    assert "no facts" in app.lesson.error.text
    app.trace.task.button.click()
    assert app.trace.error.value == "", app.trace.error.text


def test_apply_loads_the_edit_set_up_saved_and_its_letters(app, model, tmp_path, monkeypatch):
    import workbench.editing as editing

    fact = app.lesson.fact
    saved = tmp_path / "edit.safetensors"
    monkeypatch.setattr(lesson_mod, "edit_file", lambda m, f: saved)
    # The tiny random model needs easier settings than the defaults to reach the new object.
    real = editing.edit
    monkeypatch.setattr(editing, "edit", lambda m, f, **kw: real(m, f, samples=2000, steps=3, min_prob=0, **kw))
    assert lesson_mod.save_edits(model, [fact]) == [saved] and not wb.active_edits(model)
    stored = json.loads(lesson_mod.letters_file(saved).read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("computed, not loaded")

    monkeypatch.setattr("workbench.ui.edit.edit", refuse)
    monkeypatch.setattr("workbench.ui.knowledge.generate_letters", refuse)
    app.edit.task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    assert "Prepared ahead" in app.edit.card.value
    (applied,) = wb.active_edits(model)
    assert lesson_mod.tensor_hashes(applied) == stored["after"]
    # 4 · the letters: "before" from the lesson file, "now" sampled at set-up on these weights.
    app.lesson.go(4)
    app.probes.knowledge.task.button.click()
    assert app.probes.knowledge.error.value == "", app.probes.knowledge.error.text
    now = [r["now"] for r in app.probes.knowledge.rows if r["kind"] == "letter"]
    assert now == stored["letters"][0][1]
    app.edit.revert_all_button.click()
    # Other settings than the panel's defaults: computed (here: refused by the stub), never loaded.
    app.edit.hparams.value = "steps=3"
    app.edit.task.button.click()
    assert "computed, not loaded" in app.edit.error.text
