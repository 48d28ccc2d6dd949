"""The Compare panel's time estimate, its facts (the current one first), and one colour per
method in the evaluation figures (issue 41, findings 6, 9 and 12). No browser; the panel
tests that run a comparison use the tiny random model."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("ipywidgets")

import workbench as wb  # noqa: E402
from workbench.editing import SPECS, method_names  # noqa: E402
from workbench.evaluation.compare import CompareReport  # noqa: E402
from workbench.evaluation.report import EvalReport  # noqa: E402
from workbench.facts import ASSETS  # noqa: E402

COSTS = ASSETS / "results" / "compare_cost.json"


@pytest.fixture
def panel():
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import State

    # The estimate needs no model: the panel reads committed figures.
    return ComparePanel(State(None), facts=[], background=False)


def _defaults() -> list[str]:
    return [m for m in method_names() if SPECS[m].compare_default]


def test_the_estimate_adds_up_the_committed_per_fact_costs_generated_answers_included(panel):
    data = json.loads(COSTS.read_text())
    per = data["per_fact"]
    chosen = _defaults()
    assert set(chosen) <= set(per), "benchmarks/compare_cost.py measured every method Compare picks by default"
    assert "thread" in data["machine"] and data["command"].startswith("OMP_NUM_THREADS=1")
    panel.methods.value, panel.limit.value, panel.mode.value = tuple(chosen), 5, "independent"
    panel.said.value = False
    teacher_only = 5 * data["select"] + sum(5 * (per[m]["edit"] + per[m]["teacher"]) for m in chosen)
    assert panel.estimated_seconds() == pytest.approx(teacher_only)
    panel.said.value = True
    said = sum(5 * per[m]["said"] for m in chosen)
    assert said > 0, "the generated answers cost time"
    assert panel.estimated_seconds() == pytest.approx(teacher_only + said)
    parts = panel.estimated_parts()
    assert parts["said"] == pytest.approx(said)
    assert parts["edit"] == pytest.approx(sum(5 * per[m]["edit"] for m in chosen))
    text = panel.estimate.value
    assert f"≈ {teacher_only + said:.0f} s" in text and "generated answers" in text
    assert "compare_cost.json" in text and data["machine"].split(" (")[0] in text
    if "check" in data:  # the benchmark's own check: the estimate is within a third of a real run
        c = data["check"]
        assert abs(c["estimated_s"] - c["measured_s"]) <= c["measured_s"] / 3, c


def test_a_method_the_benchmark_did_not_run_takes_its_edit_time_from_its_committed_run(panel):
    from workbench.ui.compare import method_parts
    from workbench.ui.edit import measured_cost

    per = panel.costs["per_fact"]
    other = next((m for m in method_names() if m not in per and measured_cost(m)), None)
    if other is None:
        pytest.skip("every method with a committed run was benchmarked")
    parts = method_parts(panel.costs, other)
    assert parts["edit"] == pytest.approx(measured_cost(other)["per_edit"])
    same_kind = [m for m in per if SPECS[m].kind == SPECS[other].kind] or list(per)
    assert parts["said"] in [per[m]["said"] for m in same_kind]


def _report(method: str, n: int, seconds_total: float, *, partial: bool = False, n_total: int | None = None):
    summary = {"method": method, "mode": "independent", "n": n, "seconds_total": seconds_total}
    if partial:
        summary.update(partial=True, n_total=n_total)
    return EvalReport(summary=summary, rows=[], curve=[], settings={})


def test_a_finished_comparison_sets_the_next_estimate_and_says_so(panel):
    a, b = _defaults()[:2]
    panel.methods.value, panel.limit.value, panel.said.value = (a, b), 5, True
    committed = panel.estimated_seconds()
    panel._learn(CompareReport([_report(a, 5, 50.0), _report(b, 5, 20.0)]), wall=75.0, said=True)
    panel._estimate()
    # 10 + 4 s per fact for the methods, (75 - 70) / 5 = 1 s per fact to pick the facts.
    assert panel.estimated_seconds() == pytest.approx(5 * (10 + 4 + 1)) != committed
    assert "last comparison in this session" in panel.estimate.value
    panel.said.value = False  # not measured without the generated answers: the committed figures again
    assert "last comparison in this session" not in panel.estimate.value


def test_a_running_comparison_says_how_long_the_rest_takes_at_its_own_pace(panel):
    a, b = _defaults()[:2]
    panel.methods.value, panel.limit.value = (a, b), 4
    panel._live = {"start": time.perf_counter() - 6.0, "said": True, "methods": [a, b], "tick": None}
    panel.show_partial(CompareReport([_report(a, 2, 0.0, partial=True, n_total=4)]))
    text = panel.estimate.value
    assert "left" in text and f"{a}: 3.0 s per fact" in text, text
    rest = 4 * sum(v for k, v in panel.costs["per_fact"][b].items() if k in ("edit", "teacher", "said"))
    left = float(text.split("≈ ")[1].split(" s")[0])
    assert left == pytest.approx(2 * 3.0 + rest, abs=1.0)


def test_the_current_fact_is_the_first_compared_and_not_twice():
    from workbench.ui.compare import current_first

    facts = wb.bundled_facts()[:4]
    assert current_first(facts[2], facts) == [facts[2], facts[0], facts[1], facts[3]]
    mine = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "London")
    assert current_first(mine, facts)[0] is mine and len(current_first(mine, facts)) == 5
    assert current_first(wb.Fact("Eiffel Tower", "The {} is in", "Paris"), facts) == facts  # nothing to edit to


def test_a_comparison_runs_the_current_fact_first_and_the_facts_line_says_so(tiny_gemma):
    from tests.test_evaluation import known_facts
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import State

    facts = wb.filter_known(tiny_gemma, known_facts(tiny_gemma, n=6))[:3]
    assert len(facts) >= 2
    state = State(tiny_gemma)
    state.fact = facts[1]
    p = ComparePanel(state, facts=facts, background=False)
    p.methods.value, p.limit.value, p.said.value = ("in-context",), 2, False
    p.task.button.click()
    assert p.error.value == "", p.error.text
    assert "in-context" in p.table.value and p.facts_line.value.count("→") == 2
    line = p.facts_line.value
    assert line.index(facts[1].subject) < line.index("(the current fact)") < line.index(facts[0].subject), line
    # A current fact the model does not know is dropped, and the line says why.
    state.fact = wb.Fact("Atlantis", "{} is the capital of", "Nowhere-land", "Mars Station")
    p.task.button.click()
    assert "not the current fact, Atlantis" in p.facts_line.value and "does not answer" in p.facts_line.value


def test_every_method_has_one_colour_in_both_panels_of_the_committed_curves():
    from workbench.figures.evaluation import degradation_figure
    from workbench.figures.palette import method_colour
    from workbench.ui.compare import committed_curves

    reports = committed_curves()
    assert len(reports) >= 2
    fig = degradation_figure(reports)
    colours: dict[str, set] = {}
    for trace in fig.data:
        colours.setdefault(trace.legendgroup, set()).update({trace.line.color, trace.marker.color})
    assert all(len(c) == 1 for c in colours.values()), colours
    # One colour per method (a second run of a method is dashed), never one shared by two methods.
    by_method: dict[str, set] = {}
    for group, c in colours.items():
        by_method.setdefault(group.split(" ×")[0].split(" (")[0], set()).update(c)
    assert all(len(c) == 1 for c in by_method.values()), by_method
    assert len({next(iter(c)) for c in by_method.values()}) == len(by_method), "two methods share a colour"
    for r in reports:
        label = next(g for g in colours if g.split(" ×")[0] == r.summary["method"])
        assert colours[label] == {method_colour(r.summary["method"])}
    # One legend entry per run; its other panel's trace is in the same legend group.
    assert sorted(t.legendgroup for t in fig.data if t.showlegend is not False) == sorted(colours)


def test_the_scores_chart_draws_each_method_in_its_own_colour():
    from workbench.figures.evaluation import scores_figure
    from workbench.figures.palette import METHOD_COLOURS, method_colour

    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    assert all(method_colour(m) for m in method_names())
    runs = [EvalReport(summary={"method": m, "mode": "independent", "n": 5, "efficacy_score": 0.5},
                       rows=[], curve=[], settings={}) for m in _defaults()]
    fig = scores_figure(CompareReport(runs), metrics="critics")
    assert [b.marker.color for b in fig.data] == [method_colour(m) for m in _defaults()]


def test_compare_labels_are_given_room():
    """The widths that keep labels whole (the browser test measures them in Chromium)."""
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import State

    p = ComparePanel(State(None), facts=[], background=False)
    assert p.curves_button.layout.width == "max-content" and p.said.layout.width == "max-content"
    assert "…" not in p.said.description and "twice" not in p.said.description
    assert p.mode.style.description_width == "initial" and p.methods.style.description_width == "initial"
