"""The app as a lecturer uses it (issue 20): a typed fact gets real probes, one busy
state, stale lines cleared, free prompts scored on their own answers, "before" measured
on the unedited model, out-of-range input refused inline, an edit result card.
Driven programmatically on the tiny random model (no browser; tests/browser drives Voila)."""

from __future__ import annotations

import os
import threading
import time

import pytest

pytest.importorskip("ipywidgets")

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import workbench as wb  # noqa: E402
from tests.test_ui import FACT, model  # noqa: E402,F401 - the same fact and model fixture as test_ui.py


@pytest.fixture
def app(model):
    from workbench.ui import Workbench

    wb.revert_all(model)
    # Greedy answers off: test_ui.py tests them.
    a = Workbench(model, fact=FACT, facts=[FACT, *wb.bundled_facts()[:5]], background=False, answers=False)
    yield a
    wb.revert_all(model)


def type_fact(app, subject, prompt, true, new):
    app.fact.subject.value, app.fact.prompt.value = subject, prompt
    app.fact.target_true.value, app.fact.target_new.value = true, new
    app.fact.use.click()


# -- the fact ---------------------------------------------------------------------------------
def test_a_typed_fact_gets_paraphrases_neighbours_and_implications(app):
    # A city the bundled facts place things in: paraphrases from P276's templates,
    # neighbours that share the true object, implications from the knowledge table.
    type_fact(app, "Big Ben", "{} is located in", "London", "Paris")
    assert app.fact.error.value == "", app.fact.error.text
    fact = app.state.fact
    assert fact.subject == "Big Ben" and len(fact.paraphrase_prompts) >= 1
    assert all("Big Ben" in p for p in fact.paraphrase_prompts)
    assert fact.implication_prompts and all(i.target for i in fact.implication_prompts)
    assert "from the knowledge table" in app.fact.probe_note.value
    kinds = {r["kind"] for r in app.probes.rows}
    assert {"edit", "paraphrase", "implication"} <= kinds
    # Each box is editable: a line added to a kind's box becomes a probe row of that kind.
    app.fact.neighbours.value += "\nThe British Museum is located in"
    app.fact.use.click()
    assert "The British Museum is located in" in app.state.fact.neighborhood_prompts
    assert any(r["kind"] == "neighbour" and r["prompt"] == "The British Museum is located in"
               for r in app.probes.rows)


def test_typed_subject_drops_the_picked_facts_probes(app):
    app.fact.subject.value = "Colosseum"
    assert app.fact.paraphrases.value == "" and app.fact.implications.value == ""


def test_implication_lines_need_a_target_and_an_empty_true_object_is_refused(app):
    app.fact.implications.value = "The Eiffel Tower is located in the country of"
    app.fact.use.click()
    assert "needs a prompt and its target" in app.fact.error.text
    assert app.state.fact == FACT  # unchanged
    app.fact.implications.value = "The Eiffel Tower is located in the country of → Italy"
    app.fact.target_true.value = "  "
    app.fact.use.click()
    assert "type the true object" in app.fact.error.text.lower()
    assert app.state.fact == FACT


def test_the_fact_panel_says_whether_the_model_knows_the_fact(app, model):
    result = wb.probe(model, FACT.text, targets=[FACT.target_true, FACT.target_new], top_k=1)[0]
    true = result.target("Paris")
    assert f"ranked {true.rank}" in app.fact.predictions.value
    # The rank is the true object's first token's place among all next tokens.
    import torch

    with torch.no_grad():
        logits = model.hf_model(model.tokens(FACT.text)).logits[0, -1].float()
    first = wb.probing.target_ids(model, FACT.text, "Paris")[0]
    assert true.rank == int((logits > logits[first]).sum()) + 1
    known = wb.facts.top_begins_true_object(model, FACT, result.top[0].token) and true.prob > \
        result.target("Rome").prob
    assert ("does not know this fact" in app.fact.predictions.value) == (not known)


# -- one busy state ---------------------------------------------------------------------------
def test_one_busy_line_with_cancel_and_quick_buttons_disabled(model):
    from workbench.ui import Workbench

    a = Workbench(model, fact=FACT, facts=[FACT], background=True, answers=False)
    a.trace.samples.value = 2
    started = threading.Event()
    a.state.on("busy", lambda: a.state.busy_task is not None and started.set())
    a.trace.task.button.click()
    assert started.wait(60)
    assert "Busy" in a.busy.value and "Trace" in a.busy.value
    assert a.fact.use.disabled and a.probes.refresh_button.disabled and a.memories.show_button.disabled
    assert a.busy_cancel.layout.display != "none"
    a.busy_cancel.click()
    a.trace.task.join(120)
    deadline = time.time() + 10
    while a.state.busy_task is not None and time.time() < deadline:
        time.sleep(0.05)
    assert a.busy.value == "" and a.busy_cancel.layout.display == "none"
    assert not a.fact.use.disabled and not a.probes.refresh_button.disabled
    # Cancelling is the user's choice: a grey note, not a red error.
    assert a.trace.error.text == "Cancelled." and "#b00020" not in a.trace.error.value


def test_the_busy_line_counts_seconds_through_work_without_steps(model, monkeypatch):
    """A task that reports no steps (a ROME edit) still has its seconds move in the busy line."""
    from workbench.ui import Workbench
    from workbench.ui import state as ui_state

    monkeypatch.setattr(ui_state, "HEARTBEAT", 0.3)
    a = Workbench(model, fact=FACT, facts=[FACT], background=True, answers=False)
    seen = []
    a.state.on("busy", lambda: a.state.busy_task is not None and seen.append(a.busy.value))
    a.edit.task.run(lambda token: time.sleep(2.2), busy="working without steps…")
    a.edit.task.join(30)
    shown = {line.split(" · ")[1] for line in seen if " s · " in line}
    assert {"0 s", "1 s", "2 s"} <= shown, seen
    assert "working without steps" in seen[-1]


def test_a_success_clears_the_error_an_earlier_click_left(app):
    app.trace.error.show("Already running; press Cancel first.")
    app.trace.samples.value = 2
    app.trace.task.button.click()
    assert app.trace.error.value == ""


def test_remaining_time_from_the_pace_so_far():
    from workbench.ui.state import remaining

    assert remaining(10.0, 2, 6) == 20.0
    assert remaining(1.0, 0, 6) is None and remaining(5.0, 6, 6) is None


# -- probes -----------------------------------------------------------------------------------
def test_free_prompts_are_scored_on_their_own_answer_and_cleared_on_a_new_fact(app):
    from workbench.ui.probes import parse_free

    assert parse_free("a\n\nb -> c\n d → e ") == [("a", None), ("b", "c"), ("d", "e")]
    app.probes.free.value = "Rome is the capital of → Italy\nThe weather today is"
    app.probes.refresh_button.click()
    free = [r for r in app.probes.table_rows if r["kind"].startswith("free")]
    assert [r["kind"] for r in free] == ["free (Italy)", "free"]
    own, bare = free
    assert own["p(true) now"] is None and own["p(new) now"] is not None  # its own target, not Paris/Rome
    assert bare["p(true) now"] is None and bare["p(new) now"] is None and bare["top-1 now"]
    app.fact.pick(wb.bundled_facts()[0])
    assert app.probes.free.value == ""
    assert not any(r["kind"].startswith("free") for r in app.probes.rows)


def test_before_is_the_unedited_model_also_for_rows_added_after_an_edit(app, model):
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"  # the random tiny model does not reach the new object
    app.edit.task.button.click()
    assert wb.active_edits(model)
    app.probes.free.value = "The Louvre is in the city of → Paris"
    app.probes.refresh_button.click()
    row = next(r for r in app.probes.table_rows if r["kind"].startswith("free"))
    with wb.unedited(model):
        unedited_p = wb.probe(model, "The Louvre is in the city of", targets=["Paris"])[0].target("Paris").prob
    edited_p = wb.probe(model, "The Louvre is in the city of", targets=["Paris"])[0].target("Paris").prob
    assert row["p(new) before"] == pytest.approx(unedited_p) and row["p(new) now"] == pytest.approx(edited_p)
    assert unedited_p != edited_p  # the in-context sentence changes the prompt the model reads


def test_generations_have_a_before_without_reverting(app, model):
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"  # the random tiny model does not reach the new object
    app.edit.task.button.click()
    app.probes.gen_tokens.value = 4
    app.probes.run_generations()
    assert wb.active_edits(model)  # nothing reverted
    assert "wb-generations-table" in app.probes.generations.value
    assert "generate once" not in app.probes.generations.value
    before = app.probes.gen_before[(FACT.text, 4)]
    wb.revert_all(model)
    assert before == wb.generate(model, FACT.text, max_new_tokens=4)


def test_the_generations_before_is_made_with_the_answers_of_the_unedited_model(app, model, monkeypatch):
    app.probes.gen_tokens.value = 4
    app.probes.run_answers()  # the background answers of a picked fact, before any edit
    prompts = app.probes._generation_prompts(FACT)
    assert {(p, 4) for p in prompts} <= set(app.probes.gen_before)
    assert app.probes.gen_before[(FACT.text, 4)] == wb.generate(model, FACT.text, max_new_tokens=4)
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    import workbench.ui.probes as probes

    calls = []
    real = probes.generate_many
    monkeypatch.setattr(probes, "generate_many", lambda m, ps, **kw: calls.append(list(ps)) or real(m, ps, **kw))
    app.probes.run_generations()
    assert calls == [prompts]  # only "now": the "before" was there already
    import html

    assert html.escape(app.probes.gen_before[(FACT.text, 4)]) in app.probes.generations.value


def test_generate_shows_now_before_the_before_is_made(app, model, monkeypatch):
    """After an edit with no "before" made yet, the "now" column is drawn first (what Generate
    was pressed for) and the "before" column follows from the unedited weights."""
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    app.probes.gen_tokens.value = 4
    app.probes.gen_before.clear()
    import workbench.ui.probes as probes

    seen = []
    real = probes.generate_many
    monkeypatch.setattr(probes, "generate_many",
                        lambda m, ps, **kw: seen.append(app.probes.generations.value) or real(m, ps, **kw))
    app.probes.run_generations()
    assert len(seen) == 2 and "wb-generations-table" in seen[1]  # drawn between "now" and "before"
    assert "generating on the unedited weights" in seen[1]
    final = app.probes.generations.value
    assert "generating on the unedited weights" not in final
    import html

    assert html.escape(app.probes.gen_before[(FACT.text, 4)]) in final


def test_generate_draws_the_now_texts_while_they_grow(app, model, monkeypatch):
    """The "now" column is redrawn as tokens come (marked "…" and never stored as a
    "before"), then drawn whole; the "before" cell of a pending prompt says it follows."""
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    app.probes.gen_tokens.value = 6
    app.probes.gen_before.clear()
    import workbench.ui.probes as probes

    monkeypatch.setattr(probes, "STREAM_EVERY", 0.0)  # every step redrawn
    drawn = []
    real = probes.ProbesPanel._show_generations

    def spy(self, payload, pending=(), *, growing=False):
        drawn.append((growing, [g for _, g in payload[0]]))
        real(self, payload, pending, growing=growing)
        if growing:
            drawn[-1] += (self.generations.value,)

    monkeypatch.setattr(probes.ProbesPanel, "_show_generations", spy)
    app.probes.run_generations()
    growing = [d for d in drawn if d[0]]
    assert growing and not drawn[-1][0]  # partial tables first, the whole one last
    first_partial = growing[0]
    assert "…" in first_partial[2] and "follows the “now” column" in first_partial[2]
    final = dict(zip(app.probes._generation_prompts(app.state.fact), drawn[-1][1]))
    for _, texts, _ in growing:  # each partial text is a beginning of the final one
        for prompt, text in zip(final, texts):
            assert final[prompt].startswith(text)
    assert all(k[1] == 6 for k in app.probes.gen_before)
    assert "…" not in app.probes.generations.value


def test_a_cancel_while_the_before_is_made_leaves_no_pending_note(app, model, monkeypatch):
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    app.probes.gen_tokens.value = 4
    app.probes.gen_before.clear()
    import workbench.ui.probes as probes
    from workbench.runtime.progress import Cancelled

    calls = []
    real = probes.generate_many

    def stopped_second_time(m, ps, **kw):
        calls.append(ps)
        if len(calls) == 2:
            raise Cancelled("stopped")
        return real(m, ps, **kw)

    monkeypatch.setattr(probes, "generate_many", stopped_second_time)
    app.probes.run_generations()
    assert len(calls) == 2 and "wb-generations-table" in app.probes.generations.value  # "now" stays
    assert "generating on the unedited weights" not in app.probes.generations.value
    assert app.probes.gen_task.status.value == "cancelled"


def test_answers_of_the_unedited_model_are_made_once(app, model, monkeypatch):
    app.probes.run_answers()
    first = dict(app.probes.answers_now)
    assert first and first == {p: app.probes.answers_before[p] for p in first}
    import workbench.ui.probes as probes

    calls = []
    real = probes.generate_many
    monkeypatch.setattr(probes, "generate_many", lambda m, ps, **kw: calls.append(list(ps)) or real(m, ps, **kw))
    app.probes.run_answers()  # what a click's restart does: nothing left to generate
    assert calls == [] and app.probes.answers_now == first
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    app.probes.run_answers()  # with an edit applied the answers are generated anew
    assert calls and all(p in first for chunk in calls for p in chunk)


# -- bad input --------------------------------------------------------------------------------
def test_a_layer_out_of_range_is_an_inline_error_and_the_field_is_kept(app, model):
    for layer in (model.n_layers + 7, -3):
        app.memories.layer.value = layer
        app.memories.show_button.click()
        assert f"Layer {layer} is out of range" in app.memories.error.text
        assert f"0 to {model.n_layers - 1}" in app.memories.error.text
        assert app.memories.layer.value == layer and app.memories.report is None
        assert app.memories.table.children == ()
    app.memories.layer.value = 1
    app.memories.show_button.click()
    assert app.memories.error.value == "" and app.memories.report.layer == 1


def test_memory_columns_explained_and_unreadable_tokens_hidden(app):
    from workbench.ui.memories import readable

    app.memories.layer.value = 1
    app.memories.show_button.click()
    heads = [c.value for c in app.memories.table.children[:5]]
    assert all("title=" in h for h in heads)
    assert readable(" Paris") and not readable("<unused3>") and not readable("\u200b") and not readable("  ")
    shown = [c.value for c in app.memories.table.children[11::7]]  # the "promotes" cells
    for text in shown:
        for token in text.split("' '"):
            assert "<unused" not in token


# -- the edit result card ---------------------------------------------------------------------
def test_the_edit_card_shows_before_and_after_on_four_kinds_and_the_baseline_text(app, model):
    app.edit.method.value = "in-context"
    assert "written as a sentence before every prompt" in app.edit.description.value
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    card = app.edit.card.value
    for kind in ("edit prompt", "paraphrase", "neighbour", "implication"):
        assert kind in card, kind
    assert "→" in card and "should say" in card
    import html

    prefix = model.contextualize(FACT.text)[: -len(FACT.text)]
    assert prefix.strip() and html.escape(prefix) in card
    app.edit.revert_button.click()
    assert app.edit.card.value == ""


def test_apply_leaves_the_known_check_to_the_fact_tab_until_edits_stack(app, model, monkeypatch):
    """With no edit applied the Fact tab has said whether the model knows the fact, so Apply
    skips the method's own check; on top of an edit (the Fact tab says nothing then) it runs."""
    import workbench.ui.edit as edit_ui
    from workbench.editing import SPECS

    assert SPECS["rome"].checks_known and not SPECS["in-context"].checks_known
    calls = []
    real = edit_ui.edit
    monkeypatch.setattr(edit_ui, "edit", lambda m, f, **kw: calls.append(kw.get("check_known")) or real(m, f, **kw))
    app.edit.method.value = "rome"
    app.edit.hparams.value = "min_prob=0\nsamples=300\nsteps=2"
    app.edit.task.button.click()
    app.edit.task.button.click()
    assert app.edit.error.text == "" and calls == [False, None]
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.revert_all_button.click()
    app.edit.task.button.click()  # a method that checks nothing is passed nothing
    assert calls[-1] is None
    app.edit.revert_all_button.click()


def test_the_layer_note_says_why_the_default_differs_from_the_trace_peak(app):
    from types import SimpleNamespace

    import numpy as np

    app.edit.method.value = "rome"
    default = app.edit.layers.value
    peak = (int(default.split(",")[0]) + 2) % app.state.model.n_layers
    scores = np.zeros((len(app.state.model.str_tokens(app.state.model.tokens(FACT.text))), app.state.model.n_layers))
    scores[1, peak] = 1.0
    app.state.trace = SimpleNamespace(scores={"mlp": scores}, subject_range=(1, 2))
    app.edit._update_note()
    note = app.edit.layer_note.value
    assert f"layer {peak}" in note and "they differ" in note and "05_does_editing_edit_knowledge" in note


def test_a_run_started_while_the_last_one_ends_is_not_refused():
    """The greedy answers restart from the kernel's loop while the stopped run's thread is
    still ending: that start must run, not be taken for "already running" (and lost)."""
    from workbench.ui.state import Task
    from workbench.ui.widgets import ErrorLine

    task = Task("Answer", css="wb-x", error=ErrorLine(), background=True)
    ran = []

    def restart_from_another_thread():
        t = threading.Thread(target=lambda: task.run(lambda token: ran.append("second")))
        t.start()
        t.join()  # the first run's thread is alive, inside its `after`

    task.run(lambda token: ran.append("first"), after=restart_from_another_thread)
    deadline = time.time() + 10
    while ran != ["first", "second"] and time.time() < deadline:
        time.sleep(0.02)
    assert ran == ["first", "second"] and task.error.value == ""


def test_time_estimates_come_from_the_committed_runs(app):
    import json

    from workbench.facts import ASSETS
    from workbench.ui.edit import measured_cost

    data = json.loads((ASSETS / "results" / "rome_independent.json").read_text())
    cost = measured_cost("rome")
    assert cost["per_edit"] == data["summary"]["seconds_per_edit"]
    app.edit.method.value = "rome"
    assert f"{cost['per_edit']:.1f} s per edit" in app.edit.description.value
    # Compare's estimate comes from its own measured per-fact costs: tests/test_ui_compare.py.
    assert measured_cost("no-such-method") is None


def test_a_quick_call_waits_a_moment_for_a_task_to_say_it_gives_way(model, monkeypatch):
    """The race JupyterLab hit: the answers task holds the lock but has not yet marked itself
    preemptible when a quick call arrives; the call must preempt it, not report "busy"."""
    from workbench.errors import WorkbenchError
    from workbench.ui import state as ui_state
    from workbench.ui.state import State, Task
    from workbench.ui.widgets import ErrorLine

    def start(state):
        task = Task("Answer", css="wb-x", error=ErrorLine(), background=True, state=state, preemptible=True)
        task.run(lambda token: [token.check() or time.sleep(0.01) for _ in iter(int, 1)])
        deadline = time.time() + 10
        while state.preemptible is not task and time.time() < deadline:
            time.sleep(0.01)
        state.preemptible = None  # the moment before it says it gives way
        threading.Timer(0.1, lambda: setattr(state, "preemptible", task)).start()
        return task

    state = State(model)
    task = start(state)
    with state.using():
        pass
    task.join(10)
    assert not task.running and task.preempted
    # Without the grace the same moment reads as "busy" (what the browser test saw).
    monkeypatch.setattr(ui_state, "GRACE", 0.0)
    state = State(model)
    task = start(state)
    with pytest.raises(WorkbenchError, match="busy"):
        with state.using():
            pass
    time.sleep(0.2)
    task.cancel()
    task.join(10)


def test_probes_refused_by_a_busy_model_at_a_fact_change_follow_when_it_is_free(model, monkeypatch):
    """What the JupyterLab run showed: the fact changed while a task held the model, and the
    Probes table stayed empty. It must say why, show no error, and fill itself once the task ends."""
    from workbench.ui import Workbench
    from workbench.ui import state as ui_state
    from workbench.ui.state import Task

    monkeypatch.setattr(ui_state, "GRACE", 0.05)
    wb.revert_all(model)
    app = Workbench(model, fact=FACT, facts=[FACT, *wb.bundled_facts()[:5]], background=False, answers=False)
    release = threading.Event()
    blocker = Task("Run trace", css="wb-x", error=app.probes.error, background=True, state=app.state)
    blocker.run(lambda token: release.wait(10))  # not preemptible: quick calls are refused
    deadline = time.time() + 10
    while app.state.busy_task is not blocker and time.time() < deadline:
        time.sleep(0.01)
    other = wb.bundled_facts()[1]
    app.state.set_fact(other)  # what the Fact tab does after its own (here skipped) probe
    assert "busy (Run trace)" in app.probes.table.value and "follow when it is free" in app.probes.table.value
    assert app.probes.error.value == "" and app.probes.rows == []
    release.set()
    blocker.join(10)
    assert app.probes.rows and app.probes.rows[0]["prompt"] == other.text  # probed on the release
    assert "wb-probe-rows" in app.probes.table.value
    wb.revert_all(model)
