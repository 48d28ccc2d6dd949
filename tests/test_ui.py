"""The workbench app driven programmatically on a tiny random model: set values,
click buttons, assert on state, tables and figure data. No browser."""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("ipywidgets")

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import workbench as wb  # noqa: E402
from workbench.facts import Fact  # noqa: E402

FACT = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
            paraphrase_prompts=("The Eiffel Tower stands in the city of",),
            neighborhood_prompts=("The Louvre is located in the city of",),
            implication_prompts=({"prompt": "The Eiffel Tower is located in the country of", "target": "Italy"},))


@pytest.fixture(scope="module")
def model(request):
    try:
        return request.getfixturevalue("tiny_gemma")  # shared with the other tests when conftest has it
    except pytest.FixtureLookupError:
        return wb.load_model("tiny-gemma3")


@pytest.fixture
def app(model):
    from workbench.ui import Workbench

    wb.revert_all(model)
    # Greedy answers off: generating them took seconds of every test's setup; the tests about
    # them build an app with them on.
    a = Workbench(model, fact=FACT, facts=[FACT, *wb.bundled_facts()[:5]], background=False, answers=False)
    yield a
    wb.revert_all(model)


@pytest.fixture
def answering_app(model):
    from workbench.ui import Workbench

    wb.revert_all(model)
    a = Workbench(model, fact=FACT, facts=[FACT, *wb.bundled_facts()[:5]], background=False)
    yield a
    wb.revert_all(model)


def test_import_workbench_does_not_import_ipywidgets():
    import subprocess

    code = "import sys, workbench; assert 'ipywidgets' not in sys.modules; workbench.Workbench; assert 'ipywidgets' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_app_builds_with_all_panels_and_css(app):
    assert [app.tabs.get_title(i) for i in range(6)] == ["Fact", "Trace", "Memories", "Edit", "Probes", "Compare"]
    assert "wb-app" in app._dom_classes
    for name, css in [("fact", "wb-fact-panel"), ("trace", "wb-trace-panel"), ("memories", "wb-memories-panel"),
                      ("edit", "wb-edit-panel"), ("probes", "wb-probes-panel"), ("compare", "wb-compare-panel")]:
        assert css in app.panels[name]._dom_classes
    assert "wb-trace-run" in app.trace.task.button._dom_classes
    assert "wb-edit-apply" in app.edit.task.button._dom_classes
    assert "wb-edit-revert" in app.edit.revert_button._dom_classes
    assert "wb-probe-table" in app.probes.table._dom_classes
    assert "wb-memory-table" in app.memories.table._dom_classes
    assert app.state.fact == FACT
    assert "Eiffel Tower" in app.header.value


def test_fact_panel_validation_is_inline(app):
    app.fact.prompt.value = "no placeholder here"
    app.fact.use.click()
    assert "wb-error" in app.fact.error._dom_classes
    assert "{}" in app.fact.error.text and "Traceback" not in app.fact.error.text
    assert app.state.fact == FACT  # unchanged
    app.fact.prompt.value = FACT.prompt
    app.fact.target_new.value = "Paris"
    app.fact.use.click()
    assert "nothing to edit" in app.fact.error.text


def test_fact_search_and_pick(app):
    app.fact.search.value = "eiffel"
    assert len(app.fact.choices.options) == 1
    app.fact.search.value = ""
    other = app.fact.facts[1]
    app.fact.choices.value = 1
    assert app.state.fact.subject == other.subject
    assert app.fact.subject.value == other.subject
    assert "<table" in app.fact.predictions.value


def test_typed_fact_keeps_dataset_probes_only_for_same_relation(app):
    assert app.fact.fact_from_fields().paraphrase_prompts == FACT.paraphrase_prompts
    app.fact.subject.value = "Colosseum"
    typed = app.fact.fact_from_fields()
    assert typed.subject == "Colosseum" and typed.paraphrase_prompts == ()


def test_trace_click_opens_memories(app, model):
    app.trace.kinds.value = ("mlp", "resid")
    app.trace.samples.value = 2
    app.trace.window.value = 2
    app.trace.task.button.click()
    assert app.trace.error.value == "", app.trace.error.text
    result = app.state.trace
    assert set(result.scores) == {"mlp", "resid"}
    fig = app.trace.figure_widgets["mlp"]
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert len(heat.z) == len(result.tokens) and len(heat.z[0]) == model.n_layers
    assert "wb-trace-heatmap" in app.trace.figures.children[0]._dom_classes
    assert "peak" in app.edit.layer_note.value  # the edit panel shows the trace's peak layer

    # What plotly sends for a click on a heatmap cell: point_inds = [(row, column)].
    position, layer = result.subject_range[1] - 1, 2
    points = SimpleNamespace(point_inds=[(position, layer)], xs=[layer], ys=[position], trace_index=0)
    app.trace._clicked("mlp")(heat, points, None)
    assert app.state.selection == (position, layer)
    assert app.tabs.selected_index == 2  # Memories
    assert app.memories.layer.value == layer and app.memories.position.value == position
    report = app.memories.report
    assert report.layer == layer and report.position == position
    n = len(report.sub_updates)
    assert len(app.memories.table.children) == 7 * (n + 1)
    assert f"{report.token!r}" in app.memories.header.value or "token" in app.memories.header.value


def test_memory_key_profile_and_suppress_reprobe(app):
    app.memories.layer.value = 1
    app.memories.show_button.click()
    report = app.memories.report
    key = report.sub_updates[0].key
    app.memories.table.children[7].click()  # the first key's button
    assert f"Key {key}" in app.memories.profile.value
    assert app.memories.error.value == "", app.memories.error.text
    app.memories.set_change(key, "suppress")
    assert app.memories.changes == {key: "suppress"}
    assert "Re-probed with suppress" in app.memories.effect.value
    app.memories.set_change(key, "amplify")
    assert app.memories.changes == {key: "amplify"}
    app.memories.set_change(key, None)
    assert app.memories.changes == {} and app.memories.effect.value == ""


def test_knowledge_neurons_chart(app):
    app.memories.kn_layers.value = "2-3"
    app.memories.kn_steps.value = 4
    app.memories.kn_task.button.click()
    assert app.memories.kn_error.value == "", app.memories.kn_error.text
    assert "knowledge neuron" in app.memories.kn_summary.value
    fig = app.memories.kn_figure.children[0]
    assert fig.data and fig.data[0].type == "bar"


def test_edit_in_context_updates_probes_and_revert_restores(app, model):
    before_table = app.probes.table.value
    assert "as intended" not in before_table  # no colours before an edit
    app.edit.method.value = "in-context"
    assert app.edit.layers.disabled
    app.edit.hparams.value = "min_prob=0"  # the random tiny model does not reach the new object
    app.edit.task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    assert len(wb.active_edits(model)) == 1
    assert "applied" in app.edit.history.value and "in-context" in app.edit.history.value
    assert "intended" in app.probes.table.value  # refreshed and coloured
    assert "<b class='wb-edit-count'>1</b>" in app.header.value
    app.edit.revert_button.click()
    assert wb.active_edits(model) == []
    assert "reverted" in app.edit.history.value
    assert "intended" not in app.probes.table.value
    assert app.probes.table.value == before_table  # the same numbers as before the edit


def test_header_counts_the_edit_before_the_panels_recompute(app, model):
    """Issue 41, finding 8: the header lagged 1-3 s behind the edit card while the panels'
    listeners recomputed (predictions, probes); it is now updated before any of them runs."""
    seen = []

    def spy(fn):
        return lambda: (seen.append(app.header.value), fn())

    listeners = app.state._listeners["weights"]
    app.state._listeners["weights"] = [fn if fn == app._update_header else spy(fn) for fn in listeners]
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    assert len(seen) == len(listeners) - 1 > 0
    assert all("<b class='wb-edit-count'>1</b>" in h for h in seen), seen


def test_the_cards_before_column_is_kept_and_is_the_unedited_models(app, model):
    from workbench.ui import edit as edit_ui

    edit_ui._CARD_BEFORE.clear()
    first = edit_ui.card_before(model, FACT)
    assert edit_ui.card_before(model, FACT) is first  # kept: Apply probes only the edited model
    wb.edit(model, FACT, method="in-context", min_prob=0)
    edit_ui._CARD_BEFORE.clear()
    fresh = edit_ui.card_before(model, FACT)  # computed with an edit applied: still the unedited model's
    assert [p.top[0].token for p in fresh] == [p.top[0].token for p in first]
    wants = [r["want"] for r in edit_ui.card_rows(FACT)]
    assert [p.target(w).prob for p, w in zip(fresh, wants)] == pytest.approx(
        [p.target(w).prob for p, w in zip(first, wants)], rel=1e-5)
    app.edit.warm_card()  # the model is free: fills the cache, no error
    assert app.edit.error.value == "" and len(edit_ui._CARD_BEFORE) == 1


def test_rome_edit_on_tiny_model(app, model):
    if "rome" not in app.edit.method.options:
        pytest.skip("ROME is not in this install")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    app.edit.method.value = "rome"
    assert app.edit.layers.value  # pre-filled with the method default
    app.edit.hparams.value = "samples=2000\nsteps=3\ncheck_known=false\nmin_prob=0"
    app.edit.task.button.click()
    if app.edit.error.value and "corpus" in app.edit.error.text.lower():
        pytest.skip(app.edit.error.text)
    assert app.edit.error.value == "", app.edit.error.text
    assert "rome" in app.edit.history.value
    app.edit.revert_all_button.click()
    after = model.state_dict()
    assert all((after[k] == v).all() for k, v in weights.items())


def test_an_edit_that_misses_is_refused_inline(app, model):
    """On the random tiny model ROME cannot reach the new object: the panel says so in one
    line, and nothing is left applied."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    app.edit.method.value = "rome"
    app.edit.hparams.value = "samples=2000\nsteps=2\ncheck_known=false"
    app.edit.task.button.click()
    assert "below min_prob" in app.edit.error.text and "Traceback" not in app.edit.error.value
    assert wb.active_edits(model) == []
    assert all((model.state_dict()[k] == v).all() for k, v in weights.items())


def test_bad_inputs_are_sentences(app):
    app.edit.method.value = "in-context"
    app.edit.revert_button.click()
    assert "no edit to revert" in app.edit.error.text
    app.edit.method.value = app.edit.method.options[0]
    if not app.edit.layers.disabled:
        app.edit.layers.value = "five"
        app.edit.task.button.click()
        assert "integers" in app.edit.error.text
        app.edit.layers.value = "99"
        app.edit.hparams.value = ""
        app.edit.task.button.click()
        assert "out of range" in app.edit.error.text
    assert "Traceback" not in app.edit.error.value
    app.memories.layer.value = 0
    app.memories.top_k.value = 3
    app.memories.position.value = 0
    app.memories.show_button.click()
    assert app.memories.error.value == ""


def test_free_prompts_and_timing(app):
    app.probes.free.value = "Paris is the capital of\nRome is the capital of"
    app.probes.refresh_button.click()
    assert "free" in app.probes.table.value
    assert "prompts probed in" in app.probes.timing.value


def test_cancel_a_background_trace(model):
    import time

    from workbench.ui import Workbench

    a = Workbench(model, fact=FACT, facts=[FACT])
    a.trace.kinds.value = ("mlp", "attn", "resid")
    a.trace.samples.value = 2
    a.trace.task.button.click()
    a.trace.task.cancel()
    a.trace.task.join(60)
    assert not a.trace.task.running
    # Either it finished before the cancel landed, or it says "Cancelled." inline.
    assert a.trace.error.text in ("", "Cancelled.")
    assert not a.trace.task.button.disabled
    time.sleep(0)


def test_compare_panel_says_when_no_fact_is_known(app):
    """The tiny random model knows none of the facts: the panel must say so inline, not crash."""
    app.compare.methods.value = ("in-context",)
    app.compare.limit.value = 1
    app.compare.task.button.click()
    assert "none of the" in app.compare.error.text or "no facts left" in app.compare.error.text, app.compare.error.text


@pytest.mark.slow
def test_compare_panel_on_default_model(gemma):
    """The success path, on a model that knows the facts (the tiny one cannot exercise it)."""
    from workbench.ui import Workbench

    wb.revert_all(gemma)
    a = Workbench(gemma, fact=FACT, facts=wb.bundled_facts()[:3], background=False)
    a.compare.methods.value = ("in-context",)
    a.compare.limit.value = 1
    a.compare.task.button.click()
    assert a.compare.error.value == "", a.compare.error.text
    assert "in-context" in a.compare.table.value


def test_cli_app_dry_run(capsys):
    from workbench.cli import main

    assert main(["app", "--dry-run", "--port", "8899"]) == 0
    out = capsys.readouterr().out
    assert "voila" in out and "--port=8899" in out and "127.0.0.1" in out and "workbench.ipynb" in out
    assert main(["app", "--lab", "--dry-run"]) == 0
    assert "jupyterlab" in capsys.readouterr().out
    assert main(["app", "--port", "0", "--dry-run"]) == 2


def test_cli_app_prepares_the_default_edits_statistics_once(empty_cache, capsys):
    """`workbench app` computes ROME's key statistics before serving, so that the class's first
    Apply does not; a second start finds them cached and computes nothing."""
    from workbench.cli.app import prepare

    files = prepare("tiny-llama")
    assert files and all(f.exists() and "_stats_20000tok_L" in f.name for f in files)
    assert "key statistics" in capsys.readouterr().err
    made = [f.stat().st_mtime_ns for f in files]
    assert prepare("tiny-llama") == files and [f.stat().st_mtime_ns for f in files] == made


def test_one_computation_at_a_time(app):
    import threading

    held, release = threading.Event(), threading.Event()

    def hold():
        with app.state.lock:
            app.state.busy_with = "Run trace"
            held.set()
            release.wait(30)
            app.state.busy_with = None

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        app.probes.refresh_button.click()  # a quick call refuses at once instead of blocking the kernel
        assert "busy (Run trace)" in app.probes.error.text
    finally:
        release.set()
        t.join()
    app.probes.refresh_button.click()
    assert app.probes.error.value == ""


def test_probes_show_greedy_answers_beside_probabilities(answering_app, model):
    """The critics' view in the panel: each row's own answer before and now, and which object it names."""
    app = answering_app
    assert app.probes.answers_on.value
    kinds = [r["kind"] for r in app.probes.rows]
    assert "neighbour+" in kinds  # the neighbour prompts after the edit statement
    assert "says" in app.probes.table.value and app.probes.answers_now  # filled after the probe
    assert set(app.probes.answers_before) == {r["prompt"] for r in app.probes.rows}
    app.edit.method.value = "in-context"
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    # The answers now were generated with the edit in place: the in-context text is before every prompt.
    from workbench.probing import generate_many

    prompt = app.probes.rows[0]["prompt"]
    assert app.probes.answers_now[prompt] == generate_many(model, [prompt], max_new_tokens=10)[0]
    verdicts = {e["says"] for e in app.probes.table_rows}
    assert verdicts <= {"new", "true", "neither", ""} and verdicts - {""}
    app.edit.revert_button.click()


def test_an_app_started_with_answers_off_generates_none_until_they_are_switched_on(model):
    from workbench.ui import Workbench

    wb.revert_all(model)
    app = Workbench(model, fact=FACT, facts=[FACT], background=False, answers=False)
    assert not app.probes.answers_on.value and app.probes.rows and not app.probes.answers_now
    app.probes.answers_on.value = True
    app.probes.refresh_button.click()
    assert app.probes.answers_now and "says" in app.probes.table.value


def test_compare_panel_shows_intervals_and_its_facts(app, model):
    from tests.test_evaluation import known_facts

    facts = wb.filter_known(model, known_facts(model, n=6))
    assert len(facts) >= 2, "the tiny model should 'know' two of the six made-up facts"
    app.compare.facts = facts[:2]
    app.compare.methods.value = ("in-context",)
    app.compare.limit.value = 2
    app.compare.task.button.click()
    assert app.compare.error.value == "", app.compare.error.text
    assert "±" in app.compare.table.value and "edit prompt (said)" in app.compare.table.value
    assert "Facts:" in app.compare.facts_line.value and "Mars Station" in app.compare.facts_line.value
    fig = app.compare.chart.children[0]
    assert any(bar.error_y.visible for bar in fig.data)


def test_compare_panel_fills_its_table_fact_by_fact(app, model, monkeypatch):
    """An independent comparison draws its table after every fact ("1 of 2 so far"), the
    chart only at its end; the last table is the finished one."""
    from tests.test_evaluation import known_facts

    facts = wb.filter_known(model, known_facts(model, n=6))[:2]
    app.compare.facts = facts
    app.compare.methods.value = ("in-context",)
    app.compare.limit.value = 2
    app.compare.said.value = False
    tables = []
    real = type(app.compare).show_partial

    def spy(self, report):
        real(self, report)
        tables.append((self.table.value, len(self.chart.children)))

    monkeypatch.setattr(type(app.compare), "show_partial", spy)
    import ipywidgets

    app.compare.chart.children = (ipywidgets.HTML("an earlier run's chart"),)
    app.compare.task.button.click()
    assert app.compare.error.value == "", app.compare.error.text
    assert [("1 of 2 so far" in t, "2 of 2 so far" in t, charts) for t, charts in tables] == \
        [(True, False, 0), (False, True, 0)]
    assert "so far" not in app.compare.table.value and "in-context" in app.compare.table.value
    assert app.compare.chart.children and "Facts:" in app.compare.facts_line.value


def test_quick_calls_preempt_the_answers_task(model):
    """A quick call (a probe after a click) stops a running preemptible task instead of failing 'busy'."""
    import threading

    from workbench.ui.state import State, Task
    from workbench.ui.widgets import ErrorLine

    state = State(model)
    started, steps = threading.Event(), []
    task = Task("Answer", css="wb-x", error=ErrorLine(), state=state, preemptible=True)

    def work(token):
        started.set()
        while True:  # a long job that checks its token between steps
            token.check()
            steps.append(1)
            time.sleep(0.02)

    task.run(work)
    assert started.wait(10)
    with state.using() as m:       # preempts: no "busy" error
        assert m is model
    task.join(10)
    assert not task.running and task.status.value == "stopped for a newer request"
    assert task.error.value == ""  # a newer request taking over is not an error
    assert state.preemptible is None
    # A task that is not preemptible still makes a quick call refuse at once.
    other = Task("Trace", css="wb-y", error=ErrorLine(), state=state)
    release = threading.Event()
    other.run(lambda token: release.wait(10))
    time.sleep(0.2)
    with pytest.raises(wb.WorkbenchError, match="busy"):
        with state.using():
            pass
    release.set()
    other.join(10)


def test_trace_preview_then_exact_then_retrace_after_an_edit(app, model):
    """Run trace draws the attribution preview, then the exact trace; after a ROME edit,
    Re-trace traces the new object beside the trace from before."""
    shown = []
    original = app.trace.show

    def spy(result):
        shown.append(result.method)
        original(result)

    app.trace.show = spy
    app.trace.kinds.value = ("mlp",)
    app.trace.samples.value = 2
    app.trace.window.value = 2
    app.trace.retrace_task.button.click()
    assert "No weight edit is applied" in app.trace.error.text
    app.trace.task.button.click()
    assert app.trace.error.value == "", app.trace.error.text
    assert shown == ["attribution", "trace"] and app.state.trace.method == "trace"
    assert app.trace.note.value == ""  # the preview's note goes with it
    assert app.trace.before_edit is app.state.trace

    app.edit.method.value = "rome"
    app.edit.hparams.value = "samples=2000\nsteps=3\ncheck_known=false\nmin_prob=0"
    app.edit.task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    app.trace.retrace_task.button.click()
    assert app.trace.error.value == "", app.trace.error.text
    after = app.state.trace
    assert after.answer_id == model.encode(" Rome", prompt=False)[0]
    assert "After the edit" in app.trace.note.value and "Before the edit" in app.trace.summary.value
    box = app.trace.figures.children[0]
    assert len(box.children) == 2  # before | after, side by side

    app.edit.touched_task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    assert "wb-edit-touched-rows" in app.edit.touched.value and "random tokens" in app.edit.touched.value


def test_compare_panel_draws_sequential_curves_of_a_run_and_the_committed_ones(app, tmp_path):
    """Sequential reports get one curves figure (every method in one plot); committed runs load from JSON."""
    import plotly.graph_objects as go

    from workbench.evaluation import evaluate
    from workbench.evaluation.compare import CompareReport

    facts = [f for f in wb.bundled_facts() if f.target_new][:4]
    reports = [evaluate(app.state.model, facts, method=m, mode="sequential", every=2, known_only=False,
                        metrics="teacher", perplexity_texts=1, fluency_prompts=1, fluency_tokens=4)
               for m in ("in-context", "grace")]
    app.compare.show(CompareReport(reports=reports))
    figs = [c for c in app.compare.chart.children if isinstance(c, go.FigureWidget)]
    assert len(figs) == 2
    curves = figs[1]
    assert {t.name for t in curves.data} == {"in-context", "grace"}
    assert curves.layout.xaxis.type == "log"
    for r in reports:
        (tmp_path / f"{r.summary['method']}.json").write_text(r.to_json())
    app.compare.show_committed(tmp_path)
    text = app.compare.curves.children[0].value
    assert "grace: 4 edits" in text and "in-context: 4 edits" in text
    app.compare.show_committed(tmp_path / "none")
    assert "No committed" in app.compare.curves.children[0].value


def test_edit_panel_says_what_the_in_model_memories_do(app):
    app.edit.method.value = "grace"
    assert "codebook" in app.edit.layer_note.value and not app.edit.layers.disabled
    assert app.edit.layers.value == str((2 * app.state.model.n_layers) // 3)
    app.edit.method.value = "wise"
    assert "side memory" in app.edit.layer_note.value
