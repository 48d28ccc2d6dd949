"""The "Did its knowledge change?" view (issue 39, issue 41 finding 7): the fact's letter
prompts and the typed free prompts, sampled before the edits and now with the letter
test's settings, the objects marked, a verdict per text and the counts -- for a weight
edit (ROME) and a prompt memory (retrieval). Driven programmatically on the tiny random
model (no browser; tests/browser drives Voila)."""

from __future__ import annotations

import os
import re
import threading

import pytest

pytest.importorskip("ipywidgets")

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import workbench as wb  # noqa: E402
from tests.test_ui import FACT, model  # noqa: E402,F401 - the same fact and model fixture as test_ui.py
from tests.test_ui_class import app  # noqa: E402,F401 - the class app fixture
from workbench.evaluation.generated import letter_test  # noqa: E402
from workbench.evaluation.relations import letter_prompts  # noqa: E402
from workbench.ui import knowledge  # noqa: E402
from workbench.ui.knowledge import counts, highlight, mention_spans  # noqa: E402

#: ROME with small settings (its layers, [1], go in their own field).
ROME_HPARAMS = "steps=3\nsamples=500\nn_prefixes=1\nn_key_prefixes=1\nmin_prob=0\ncheck_known=false"


def _apply(app, method: str, hparams: str, layers: str | None = None) -> None:
    app.edit.method.value = method
    if layers is not None:
        app.edit.layers.value = layers
    app.edit.hparams.value = hparams
    app.edit.task.button.click()
    if app.edit.error.value and "corpus" in app.edit.error.text.lower():
        pytest.skip(app.edit.error.text)
    assert app.edit.error.value == "", app.edit.error.text
    assert wb.active_edits(app.state.model)


def _cells(view, css: str) -> list[str]:
    return re.findall(rf"<td class='{css}'[^>]*>(.*?)</td>", view.texts.value, flags=re.S)


# -- the pieces -------------------------------------------------------------------------------
def test_mentions_are_marked_as_the_judge_reads_them():
    assert mention_spans("Rome, not Romeo; ROME. São Paulo", "Rome") == [(0, 4), (17, 21)]
    assert mention_spans("from Sao Paulo and São Paulo", "São Paulo") == [(5, 14), (19, 28)]
    marked = highlight("In New York & York", new="York", old="New York")
    assert marked.startswith('In <mark class="wb-mark-old"') and "New York</mark>" in marked
    assert marked.endswith('&amp; <mark class="wb-mark-new" style="background:#ffd88a">York</mark>')
    assert highlight("<b>Paris</b>", new="Rome", old="Paris").startswith("&lt;b&gt;<mark")  # escaped
    assert counts(["new", "both", "true", "neither"], FACT) == "2 of 4 name Rome, 2 name Paris (1 both)"


def test_marks_agree_with_the_verdict_beside_them():
    """Issue 41: every mention was coloured, while the verdict counts only some of them."""
    from workbench.evaluation.judge import letter_verdict

    text = "I took a bus from Rome to the airport. It is in Paris, near the Toyota Prius dealer."
    assert letter_verdict(text, new="Rome", true="Paris", subject="Eiffel Tower") == "true"
    marked = highlight(text, new="Rome", old="Paris", subject="Eiffel Tower")
    assert re.search(r'<mark class="wb-mark-new wb-mark-uncounted"[^>]*title="not counted[^"]*">Rome</mark>', marked)
    assert '<mark class="wb-mark-old" style="background:#b9d8ff">Paris</mark>' in marked
    # Another thing's name: "Toyota" before "Prius" names the car, not the subject's maker.
    marked = highlight(text, new="Toyota", old="Nissan", subject="Nissan Leaf")
    assert marked.count("wb-mark-uncounted") == 1 and letter_verdict(text, new="Toyota", true="Nissan",
                                                                     subject="Nissan Leaf") == "neither"
    # Without a subject nothing is dimmed (the judge's subject rules cannot apply).
    assert "uncounted" not in highlight(text, new="Rome", old="Paris")


# -- the view in the app ----------------------------------------------------------------------
def test_the_view_sits_in_the_probes_tab_in_place_of_generate(app):
    view = app.probes.knowledge
    assert view in app.probes.children and app.probes.generations not in app.probes.children
    assert "wb-knowledge-view" in view._dom_classes and "wb-knowledge-run" in view.task.button._dom_classes
    assert "Did its knowledge change?" in view.children[0].value


def test_before_and_after_a_rome_edit_with_marks_counts_and_a_free_prompt(app, model, monkeypatch):
    view = app.probes.knowledge
    app.probes.run_answers()  # the background answers of a picked fact make the letters' "before"
    letters = [p for p in letter_prompts(FACT) for _ in range(2)]
    assert tuple(letters) in view.before
    before = letter_test(model, [FACT])[0]
    assert view.before[tuple(letters)] == [x["text"] for x in before]  # the measure's texts
    _apply(app, "rome", ROME_HPARAMS, layers="1")
    app.probes.free.value = "Dear Sam, I am writing from Rome → Rome"
    calls = []
    real = knowledge.generate_many
    monkeypatch.setattr(knowledge, "generate_many",
                        lambda m, ps, **kw: calls.append((list(ps), kw)) or real(m, ps, **kw))
    # The first texts are drawn while they grow, before the call ends.
    drawn = []
    monkeypatch.setattr(knowledge, "STREAM_EVERY", 0.0)
    view.texts.observe(lambda change: drawn.append(change["new"]), "value")
    view.task.button.click()
    assert view.error.value == "", view.error.text
    assert view.task.status.value.startswith("done in")
    # After the edit only "now" was generated for the letters; the free prompt's "before" followed.
    assert [c[0] for c in calls] == [letters, ["Dear Sam, I am writing from Rome"] * 2,
                                     ["Dear Sam, I am writing from Rome"] * 2]
    assert all(kw["do_sample"] and kw["top_k"] == 5 and kw["max_new_tokens"] == 60 and kw["seed"] == 0
               for _, kw in calls)
    assert any(" …" in d for d in drawn)  # streamed
    # Kept for the background answers the click preempted: they find the letters made.
    assert (view._version, tuple(letters)) in view.ahead
    after = letter_test(model, [FACT])[0]
    rows = [r for r in view.rows if r["kind"] == "letter"]
    assert [r["now"] for r in rows] == [x["text"] for x in after]
    assert [r["before"] for r in rows] == [x["text"] for x in before]
    shown = {"new": "new", "true": "old", "both": "both", "neither": "neither"}
    assert _cells(view, "wb-knowledge-verdict-now")[: len(after)] == [shown[x["verdict"]] for x in after]
    assert _cells(view, "wb-knowledge-verdict-before")[: len(before)] == [shown[x["verdict"]] for x in before]
    # The counts, letters and free texts apart.
    n_new = sum(x["verdict"] in ("new", "both") for x in after)
    n_old = sum(x["verdict"] in ("true", "both") for x in after)
    summary = view.summary.value
    assert f"now: {n_new} of 6 name Rome, {n_old} name Paris" in summary, summary
    b_new = sum(x["verdict"] in ("new", "both") for x in before)
    assert f"before: {b_new} of 6 name Rome" in summary
    # The typed free prompt is there, before and now, and its prompt names Rome: only the
    # continuation is judged and marked.
    free = [r for r in view.rows if r["kind"] == "free"]
    assert len(free) == 2 and all(r["before"] is not None and r["now"] is not None for r in free)
    assert "Dear Sam, I am writing from Rome" in view.texts.value and "(free)" in view.texts.value
    assert "Free-prompt texts" in summary
    # Marks: every mention of an object in a shown text is marked in its colour.
    for r in view.rows:
        for text in (r["now"], r["before"]):
            n_marks = len(mention_spans(text, "Rome")) + len(mention_spans(text, "Paris"))
            assert highlight(text, new="Rome", old="Paris").count("<mark") == n_marks
    assert view.texts.value.count("wb-mark-new") + view.texts.value.count("wb-mark-old") == sum(
        len(mention_spans(t, "Rome")) + len(mention_spans(t, "Paris"))
        for r in view.rows for t in (r["now"], r["before"]))
    # A made-up text shows both colours as the view draws them.
    # (A sentence about the subject: the judge counts no mention in a sentence about nothing.)
    monkeypatch.setattr(knowledge, "generate_many", lambda m, ps, **kw: [" It is in Rome and Paris."] * len(ps))
    view.ahead.clear()  # else the click draws the letters it kept
    view.task.button.click()
    assert "<mark class=\"wb-mark-new\" style=\"background:#ffd88a\">Rome</mark>" in view.texts.value
    assert "<mark class=\"wb-mark-old\" style=\"background:#b9d8ff\">Paris</mark>" in view.texts.value
    assert "now: 6 of 6 name Rome, 6 name Paris (6 both)" in view.summary.value
    assert "both" in _cells(view, "wb-knowledge-verdict-now")


def test_after_an_edit_the_background_answers_make_the_letters_now_and_the_click_draws_them(app, model,
                                                                                             monkeypatch):
    view = app.probes.knowledge
    app.probes.run_answers()  # "before", after the pick
    _apply(app, "rome", ROME_HPARAMS, layers="1")
    shown_first = []
    real_prepare = view.prepare_now
    monkeypatch.setattr(view, "prepare_now",
                        lambda m, token=None: shown_first.append(dict(app.probes.answers_now)) or real_prepare(m, token))
    app.probes.run_answers()  # after the edit: the answers, then the letters "now"
    letters = tuple(p for p in letter_prompts(FACT) for _ in range(2))
    assert (view._version, letters) in view.ahead
    # The answers were shown before the letters began (they take seconds more on the real model).
    assert shown_first and shown_first[0] == app.probes.answers_now and shown_first[0]
    # Run again for the same probe (as after a click preempted it), the answers are not made again.
    from workbench.ui import probes as probes_module

    made = []
    real_many = probes_module.generate_many
    monkeypatch.setattr(probes_module, "generate_many", lambda m, ps, **kw: made.append(ps) or real_many(m, ps, **kw))
    app.probes.run_answers()
    assert made == []
    monkeypatch.setattr(probes_module, "generate_many", real_many)
    calls = []
    real = knowledge.generate_many
    monkeypatch.setattr(knowledge, "generate_many", lambda m, ps, **kw: calls.append(list(ps)) or real(m, ps, **kw))
    view.task.button.click()
    assert view.error.value == "", view.error.text
    assert calls == []  # nothing left to generate
    after = letter_test(model, [FACT])[0]
    assert [r["now"] for r in view.rows] == [x["text"] for x in after]  # the measure's texts
    # Another change of weights drops them: the next click samples the weights applied then.
    wb.revert_all(model)
    app.state.emit("weights")
    assert view.ahead == {}


def test_retrieval_now_goes_through_the_memory(app, model, monkeypatch):
    view = app.probes.knowledge
    _apply(app, "retrieval", "min_prob=0")
    letters = [p for p in letter_prompts(FACT) for _ in range(2)]
    read = []
    real = knowledge.generate_many

    def spy(m, ps, **kw):
        read.append([m.contextualize(p) for p in ps])
        return real(m, ps, **kw)

    monkeypatch.setattr(knowledge, "generate_many", spy)
    view.before.clear()  # made in the background at the fact's choice: here both columns are generated
    as_edited = [model.contextualize(p) for p in letters]
    view.task.button.click()
    assert view.error.value == "", view.error.text
    # "Now" went through the model as edited (what the memory retrieves for each letter), "before" did not.
    assert read == [as_edited, letters]
    after = letter_test(model, [FACT])[0]
    assert [r["now"] for r in view.rows] == [x["text"] for x in after]
    with wb.unedited(model):
        before = letter_test(model, [FACT])[0]
    assert [r["before"] for r in view.rows] == [x["text"] for x in before]
    assert "now: " in view.summary.value and "before: " in view.summary.value
    assert len(_cells(view, "wb-knowledge-now")) == 6


def test_unedited_now_is_before_and_a_change_of_weights_marks_now_stale(app, model):
    view = app.probes.knowledge
    view.task.button.click()
    assert all(r["now"] == r["before"] for r in view.rows) and len(view.rows) == 6
    assert "No edit is applied" in view.summary.value
    _apply(app, "in-context", "min_prob=0")
    assert all(r["now"] is None for r in view.rows) and "press Generate letters" in view.summary.value
    app.fact.choices.value = 1  # another fact: the view empties
    assert view.rows == [] and view.texts.value == ""


def test_cancel_stops_and_leaves_no_generating_line(app, model, monkeypatch):
    view = app.probes.knowledge
    _apply(app, "in-context", "min_prob=0")
    view.before.clear()
    real = knowledge.generate_many
    calls = []

    def cancel_second(m, ps, **kw):
        calls.append(ps)
        if len(calls) == 2:  # the "before": the user presses Cancel meanwhile
            view.task.cancel()
        return real(m, ps, **kw)

    monkeypatch.setattr(knowledge, "generate_many", cancel_second)
    view.task.button.click()
    # In-context: "now" read the edit statement before each letter.
    assert model.contextualize(calls[0][0]) != calls[0][0]
    assert view.task.status.value == "cancelled" and view.error.text == "Cancelled."
    assert "generating on the unedited weights" not in view.texts.value
    assert len(_cells(view, "wb-knowledge-now")) == 6 and wb.active_edits(model)


def test_in_a_thread_now_streams_and_the_busy_lines_cancel_stops_it(model, monkeypatch):
    from workbench.ui import Workbench

    wb.revert_all(model)
    a = Workbench(model, fact=FACT, facts=[FACT], background=True, answers=False)
    view = a.probes.knowledge
    view.before.clear()
    wb.edit(model, FACT, method="in-context", min_prob=0)
    a.state.emit("weights")
    a.probes.answer_task.join(60)
    growing = threading.Event()

    def slow(m, ps, *, cancel=None, on_text=None, **kw):
        on_text([" Greetings from Rome"] + [""] * (len(ps) - 1))  # the first words of the first letter
        growing.set()
        for _ in range(3000):  # at most 60 s: a generation that only Cancel ends
            cancel.check()
            threading.Event().wait(0.02)
        raise AssertionError("never cancelled")

    monkeypatch.setattr(knowledge, "generate_many", slow)
    try:
        view.task.button.click()
        assert growing.wait(60)
        deadline = threading.Event()
        for _ in range(100):  # the busy line says what runs, with its Cancel
            if "Generate letters" in a.busy.value:
                break
            deadline.wait(0.05)
        assert "Generate letters" in a.busy.value and a.busy_cancel.layout.display != "none"
        assert "<mark class=\"wb-mark-new" in view.texts.value and " …" in view.texts.value  # drawn as it grows
        assert "now: <i>generating…</i>" in view.summary.value
        a.busy_cancel.click()
        view.task.join(60)
        assert view.task.status.value == "cancelled" and view.error.text == "Cancelled."
        assert "(cancelled)" in view.texts.value and "generating" not in view.texts.value + view.summary.value
        assert wb.active_edits(model)  # Cancel stops the generation; the edit stays
    finally:
        wb.revert_all(model)
