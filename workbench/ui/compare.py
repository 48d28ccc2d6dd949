"""Compare panel: several editing methods on the same small set of facts.

The facts are the app's current fact first, then the first known facts of the bundled
set. The time estimate adds up seconds per fact measured for each part of what a
comparison runs (:func:`estimate`): the ones this session's last comparison took where
there was one, else the figures ``benchmarks/compare_cost.py`` measured and committed.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.evaluation import compare, evaluate
from workbench.snippets import Call, Code, defaults_of
from workbench.ui.code import cell
from workbench.ui.state import State, Task
from workbench.ui.widgets import WIDE, ClampedIntText, CodeView, ErrorLine, table
from workbench.editing import SPECS
from workbench.ui.edit import methods
from workbench.ui.figures import compare_figure, curves_figure

#: Summary rates shown, in order, with their headers: each teacher-forced rate ("p") beside the
#: one read off the generated answers ("said"). EasyEdit accuracies are a different metric, not shown.
RATES = {
    "efficacy_score": "edit prompt (p)", "gen_efficacy": "edit prompt (said)",
    "paraphrase_score": "paraphrases (p)", "gen_paraphrase": "paraphrases (said)",
    "gen_question": "question (said)",
    "neighborhood_score": "neighbours kept (p)", "gen_neighborhood": "neighbours kept (said)",
    "neighborhood_plus": "neighbours after the edit statement (p)",
    "gen_neighborhood_plus": "neighbours after the edit statement (said)",
    "implication_score": "implications (top-1)",
}
#: The default (and advised least) number of facts a comparison runs on.
MIN_FACTS = 5
COLUMNS = ("method", *RATES, "nkl", "n", "n_skipped", "n_failed", "seconds_per_edit")
HEADERS = {**RATES, "nkl": "neighbour KL", "n": "facts", "n_skipped": "skipped (not known)",
           "n_failed": "failed edits", "seconds_per_edit": "s / edit"}
#: The metrics a comparison asks for: teacher-forced only, or the generated answers too
#: (greedy answers, the question form and CounterFact+; see workbench.evaluation.generated).
METRICS = {False: "teacher", True: "teacher,generation,question,plus"}
#: The committed per-fact seconds of a comparison's parts (written by benchmarks/compare_cost.py).
COSTS_FILE = "compare_cost.json"
#: A comparison's parts, as the estimate names them: per method and fact the edit, the
#: teacher-forced scores (unedited and edited model), the generated answers (both, when
#: asked for); once per fact compared, picking the known facts.
PARTS = {"edit": "edits", "teacher": "teacher-forced scores", "said": "generated answers",
         "select": "picking known facts"}


def committed_costs(path: str | Path | None = None) -> dict | None:
    """The per-fact seconds of Compare's parts as committed (``assets/results/compare_cost.json``).

    Returns None when the file is missing or unreadable (the panel then shows no estimate).

    Example:
        >>> costs = committed_costs()
        >>> sorted(costs["per_fact"][next(iter(costs["per_fact"]))])     # doctest: +SKIP
        ['edit', 'generate', 'said', 'teacher']
    """
    from workbench.facts import ASSETS

    path = Path(path) if path is not None else ASSETS / "results" / COSTS_FILE
    try:
        data = json.loads(path.read_text())
        return data if data.get("per_fact") else None
    except (OSError, ValueError, AttributeError):
        return None


def method_parts(costs: dict, method: str) -> dict[str, float] | None:
    """Seconds per fact of ``method``'s parts (``edit``, ``teacher``, ``said``), from ``costs``.

    A method the benchmark did not run takes its edit time from its committed independent
    run (:func:`workbench.ui.edit.measured_cost`) and its scoring from the slowest measured
    method of its kind (a prompt method scores longer prompts): an estimate that errs long.
    None when neither is there.

    Example:
        >>> method_parts({"per_fact": {"x": {"edit": 1.0, "teacher": 0.5, "said": 4.0}}}, "x")
        {'edit': 1.0, 'teacher': 0.5, 'said': 4.0}
    """
    from workbench.ui.edit import measured_cost

    per = costs.get("per_fact") or {}
    if method in per:
        return {k: float(per[method][k]) for k in ("edit", "teacher", "said")}
    cost = measured_cost(method)
    kind = SPECS[method].kind if method in SPECS else None
    alike = [m for m in per if m in SPECS and SPECS[m].kind == kind] or list(per)
    if cost is None or not alike:
        return None
    donor = per[max(alike, key=lambda m: per[m]["teacher"] + per[m]["said"])]
    return {"edit": float(cost["per_edit"]), "teacher": float(donor["teacher"]), "said": float(donor["said"])}


def estimate(costs: dict, methods: list[str], n: int, *, said: bool,
             learned: dict[str, float] | None = None) -> dict[str, float] | None:
    """Seconds a comparison of ``methods`` on ``n`` facts takes, by part, and their ``total``.

    ``select × n + Σ_methods (edit + teacher [+ said]) × n`` with the per-fact seconds of
    ``costs`` (:func:`committed_costs`); a method in ``learned`` (its seconds per fact, all
    parts, as measured in this session) counts as that, under ``"learned"``. None when a
    method has neither.

    Example:
        >>> costs = {"select": 0.5, "per_fact": {"a": {"edit": 2.0, "teacher": 1.0, "said": 6.0}}}
        >>> estimate(costs, ["a"], 5, said=True)
        {'select': 2.5, 'edit': 10.0, 'teacher': 5.0, 'said': 30.0, 'learned': 0.0, 'total': 47.5}
    """
    learned = learned or {}
    out = {"select": float(costs.get("select") or 0.0) * n, "edit": 0.0, "teacher": 0.0, "said": 0.0, "learned": 0.0}
    for method in methods:
        if method in learned:
            out["learned"] += learned[method] * n
            continue
        parts = method_parts(costs, method)
        if parts is None:
            return None
        for part in ("edit", "teacher", "said") if said else ("edit", "teacher"):
            out[part] += parts[part] * n
    out["total"] = sum(out.values())
    return out


def same_fact(a, b) -> bool:
    """Whether two facts ask about the same prompt of the same subject (spacing and case aside):
    a comparison holds one of them, also when their new objects differ (one prompt edited
    two ways tests one thing twice).

    Example:
        >>> from workbench.facts import Fact
        >>> same_fact(Fact("Eiffel Tower", "The {} is in", "Paris", "Rome"),
        ...           Fact("eiffel tower", "The {}  is in", "Paris", "London"))
        True
    """
    def key(f) -> tuple[str, str]:
        return tuple(" ".join(str(getattr(f, k, "")).split()).casefold() for k in ("subject", "prompt"))

    return key(a) == key(b)


def current_first(current, facts: list) -> list:
    """``facts`` with the current fact first (and not a second time); unchanged when there is no
    current fact or it has no new object to edit towards.

    Example:
        >>> from workbench.facts import Fact
        >>> a, b = Fact("A", "{} is in", "X", "Y"), Fact("B", "{} is in", "X", "Z")
        >>> [f.subject for f in current_first(b, [a, b])]
        ['B', 'A']
    """
    if current is None or not getattr(current, "target_new", None):
        return list(facts)
    return [current, *(f for f in facts if not same_fact(f, current))]


def compare_calls(current, facts: list, bundled: bool, **kwargs) -> list:
    """A comparison as code: its facts (the bundled ones picked as the panel picks them, or the
    panel's own list written out), then :func:`~workbench.evaluation.compare` with ``kwargs``."""
    calls: list = []
    if bundled:
        calls.append(Code("facts = [f for f in wb.bundled_facts() if f.target_new]"))
        if current is not None and current.target_new:
            calls.append(Code("facts = [fact, *(f for f in facts if (f.subject.casefold(), f.prompt.casefold()) != "
                              "(fact.subject.casefold(), fact.prompt.casefold()))]  # the app's fact first"))
        shown: object = Code("facts")
    else:
        shown = list(facts)
    calls.append(Call(compare, (shown,), kwargs, defaults=defaults_of(evaluate), keep=("methods",),
                      fact_fields=None, result="report"))
    return calls


def committed_curves(folder=None) -> list:
    """The sequential-editing reports committed under ``assets/results/sequential_1k`` (empty if none)."""
    from workbench.evaluation.evaluate import read_report
    from workbench.facts import ASSETS

    folder = Path(folder) if folder is not None else ASSETS / "results" / "sequential_1k"
    return [read_report(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


class ComparePanel(widgets.VBox):
    def __init__(self, state: State, *, facts=None, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        self.facts = facts  # None: the bundled facts
        self.costs = committed_costs()
        #: Seconds per fact of each method, all parts, as the last comparison here took:
        #: ``{(method, said): seconds}``, and ``{said: seconds}`` of picking the known facts.
        self.learned: dict[tuple[str, bool], float] = {}
        self.learned_select: dict[bool, float] = {}
        self._live: dict = {}  # the running comparison's clock (see show_partial)
        self._current = None  # the current fact when the last comparison started
        self._steps_note = ""
        options = methods()
        chosen = tuple(m for m in options if SPECS[m].compare_default) or tuple(options[:2])
        self.methods = widgets.SelectMultiple(options=options, value=chosen, rows=min(7, max(2, len(options))),
                                              description="Methods", style=WIDE)
        self.methods.add_class("wb-compare-methods")
        # Five facts at least by default: with three, every rate moves in 33-point steps.
        self.limit = ClampedIntText(value=MIN_FACTS, lo=1, hi=1000, description="Facts",
                                    tooltip=f"with fewer than {MIN_FACTS} facts a rate moves in steps of "
                                            f"{100 // (MIN_FACTS - 1)} points or more")
        self.limit.add_class("wb-compare-limit")
        self.mode = widgets.Dropdown(options=["independent", "sequential", "batch"], value="independent",
                                     description="Mode", style=WIDE)
        # Its cost is in the estimate line (measured), not in the label: "about twice" was wrong.
        self.said = widgets.Checkbox(value=True, indent=False, layout=widgets.Layout(width="max-content"),
                                     description="Also score the generated answers")
        self.said.add_class("wb-compare-said")
        self.estimate = widgets.HTML()
        self.estimate.add_class("wb-compare-estimate")
        for w in (self.methods, self.limit, self.said, self.mode):
            w.observe(lambda _: self._estimate(), "value")
        self.task = Task("Compare", css="wb-compare-run", error=self.error, background=background, state=state)
        self.task.button.on_click(lambda _: self.run())
        self.table = widgets.HTML()
        self.table.add_class("wb-compare-table")
        self.chart = widgets.VBox()
        self.chart.add_class("wb-compare-chart")
        self.facts_line = widgets.HTML()
        self.facts_line.add_class("wb-compare-facts")
        self.code = CodeView("wb-compare-code")
        # max-content: as wide as its label in any container ("Committed 1,000-e…" was cut).
        self.curves_button = widgets.Button(description="Committed 1,000-edit curves",
                                            layout=widgets.Layout(width="max-content"),
                                            tooltip="every method's sequential run on the shared CounterFact "
                                                    "records, as measured and committed (no model needed)")
        self.curves_button.add_class("wb-compare-curves-button")
        self.curves_button.on_click(lambda _: self.show_committed())
        self.curves = widgets.VBox()
        self.curves.add_class("wb-compare-curves")
        super().__init__([
            widgets.HTML("<b>Compare methods</b> on the current fact and the first known facts of the bundled "
                         "set. Each rate is the "
                         "share of prompts (%) where the edit behaves as intended: <i>p</i> compares the two "
                         "objects' probabilities after the prompt (teacher-forced, as the methods' papers do); "
                         "<i>said</i> reads the model's own greedy answer (as their critics do). "
                         "± is a 95 % bootstrap interval over the facts; with a handful of facts it is wide. "
                         "Edits are reverted after scoring."),
            widgets.HBox([self.methods, widgets.VBox([self.limit.row, self.mode, self.said])]),
            self.task, self.code, self.estimate, self.error, self.table, self.facts_line, self.chart,
            widgets.HTML("<b>Many edits, one after another.</b> In <i>sequential</i> mode the run's own "
                         "curve appears above; the committed runs (up to 1,000 edits each) are here:"),
            self.curves_button, self.curves,
        ])
        self.add_class("wb-compare-panel")
        self._estimate()

    def estimated_parts(self) -> dict[str, float] | None:
        """The estimate by part (:func:`estimate`, ``"total"`` included) for the chosen methods,
        facts and scores; None without figures for every method.

        This session's own seconds per method count where its last comparison (with the same
        choice of generated answers) ran that method; the committed figures for the rest.
        Sequential and batch modes add each method's perplexity and fluency, before and after.
        """
        said, n, chosen = bool(self.said.value), int(self.limit.value), list(self.methods.value)
        if not chosen:
            return None
        learned = {m: sec for (m, with_said), sec in self.learned.items() if with_said == said}
        costs = dict(self.costs or {"per_fact": {}})
        if said in self.learned_select:
            costs["select"] = self.learned_select[said]
        parts = estimate(costs, chosen, n, said=said, learned=learned)
        if parts is not None and self.mode.value != "independent":
            # What these modes add per method: perplexity and fluency before and after the edits.
            parts["drift"] = 2 * float(costs.get("drift") or 0.0) * len(chosen)
            parts["total"] += parts["drift"]
        return parts

    def estimated_seconds(self) -> float | None:
        """Seconds the comparison should take (see :meth:`estimated_parts`); None without figures.

        Example:
            >>> panel.estimated_seconds()         # doctest: +SKIP
            164.0
        """
        parts = self.estimated_parts()
        return None if parts is None else parts["total"]

    def _estimate(self) -> None:
        parts = self.estimated_parts()
        self.estimate.value = "" if parts is None else (
            "<span style='color:#555'>" + html.escape(self._estimate_text(parts)) + "</span>")

    def _estimate_text(self, parts: dict[str, float]) -> str:
        """``≈ 164 s (edits 24 s, ...). Based on ...``: the total, its parts, what they rest on."""
        named = {**PARTS, "drift": "perplexity and fluency", "learned": "methods timed in this session"}
        shown = ", ".join(f"{named[k]} {v:.0f} s" for k, v in parts.items() if k != "total" and v >= 0.5)
        said = bool(self.said.value)
        here = [m for m in self.methods.value if (m, said) in self.learned]
        rest = [m for m in self.methods.value if m not in here]
        basis = []
        if here:
            basis.append(f"{', '.join(here)}: the seconds per fact of the last comparison in this session")
        if rest and self.costs:
            where = self.costs.get("machine") or "this kind of machine"
            basis.append(f"{', '.join(rest)}: seconds per fact measured by benchmarks/compare_cost.py on "
                         f"{where} (assets/results/{COSTS_FILE})")
        text = f"≈ {parts['total']:.0f} s ({shown}). Based on " + "; ".join(basis) + "."
        if not said and self.costs:
            # What ticking the box would cost, so that the choice is an informed one.
            more = estimate(self.costs, rest, int(self.limit.value), said=True)
            if more is not None and more["said"] >= 0.5:
                text += f" The generated answers would add ≈ {more['said']:.0f} s."
        if self.mode.value != "independent":
            text += " Edits counted one at a time (a batch edit may take less)."
        return text

    def run(self) -> None:
        try:
            chosen = list(self.methods.value)
            if not chosen:
                raise WorkbenchError("choose at least one method")
            from workbench.facts import bundled_facts

            facts = [f for f in (self.facts if self.facts is not None else bundled_facts()) if f.target_new]
            # The fact the user is looking at is compared first (once, if the set holds it too).
            facts = current_first(self.state.fact, facts)
            if not facts:
                raise WorkbenchError("no facts with a new object to compare on")
        except WorkbenchError as exc:
            self.error.show(exc)
            return
        model, limit, mode, said = self.state.model, int(self.limit.value), self.mode.value, bool(self.said.value)
        self._current = self.state.fact
        self._steps_note = (f" With {limit} fact{'s' if limit != 1 else ''} a rate can only be "
                            + ", ".join(f"{100 * k // limit} %" for k in range(limit + 1))
                            + f"; {MIN_FACTS} or more make the differences readable."
                            if limit < MIN_FACTS else "")
        # Perplexity and fluency are not in this table and cost most of a short run's time:
        # measured only in the modes whose curves show them.
        # Independent runs fill the table fact by fact: the first row is read while the rest run.
        growing = self.show_partial if mode == "independent" else None
        code = cell(self.state, compare_calls(self.state.fact, facts, self.facts is None, methods=chosen, mode=mode,
                                              limit=limit, metrics=METRICS[said], drift=mode != "independent",
                                              search_chunk=1),
                    fact=self.state.fact if self.facts is None else None, whole=True)

        def work(token):
            self._live = {"start": time.perf_counter(), "said": said, "methods": chosen, "tick": None}
            # search_chunk=1: each fact's target search in its own edit, so the first row comes
            # after one search, not after a batch of them.
            report = compare(model, facts, methods=chosen, mode=mode, limit=limit, cancel=token, metrics=METRICS[said],
                             drift=mode != "independent", on_update=growing, search_chunk=1)
            if mode == "independent":
                self._learn(report, time.perf_counter() - self._live["start"], said)
            return report

        def done(report) -> None:
            self.show(report)
            self.code.set(code)

        # after: also a cancelled or failed run leaves the estimate, not its "… s left", in the line.
        self.task.run(work, done, busy="evaluating…", after=self._estimate)

    def _learn(self, report, wall: float, said: bool) -> None:
        """Keep what each method of a finished comparison took per fact, for the next estimate."""
        runs = [r for r in report.reports if r.summary.get("seconds_total") and r.summary.get("n")]
        # New dicts, swapped in whole: the kernel's thread may be reading them for an estimate.
        self.learned = {**self.learned, **{(r.summary["method"], said): r.summary["seconds_total"] / r.summary["n"]
                                           for r in runs}}
        if runs:
            # What is not a method's run is picking the known facts (once per comparison).
            rest = max(0.0, wall - sum(r.summary["seconds_total"] for r in runs))
            self.learned_select = {**self.learned_select, said: rest / runs[0].summary["n"]}

    def show_partial(self, report) -> None:
        """The table so far (a comparison still running): no chart until it ends; the estimate
        line says how long the rest should take at this run's own pace."""
        if self.chart.children:
            self.chart.children = ()  # the last comparison's chart; this one's is drawn at its end
        self._draw_table(report)
        left = self._seconds_left(report)
        if left is not None:
            self.estimate.value = f"<span style='color:#555'>{html.escape(left)}</span>"

    def _seconds_left(self, report) -> str | None:
        """``≈ 80 s left (rome: 9.8 s per fact so far)``: the running method at its pace in this run,
        the methods after it by the estimate's figures. None when there is nothing to go on."""
        live, now = self._live, time.perf_counter()
        if not live or not report.reports:
            return None
        running = report.reports[-1]
        method, done = running.summary["method"], running.summary.get("n") or 0
        if live.get("method") != method:  # a new method's first row: its clock started at the last one's end
            live.update(method=method, since=live.get("tick") or live["start"])
        live["tick"] = now
        total = running.summary.get("n_total") or done
        if not done:
            return None
        pace = (now - live["since"]) / done
        later = live["methods"][live["methods"].index(method) + 1:] if method in live["methods"] else []
        rest = estimate(self.costs or {"per_fact": {}}, later, total, said=live["said"],
                        learned={m: s for (m, w), s in self.learned.items() if w == live["said"]})
        if later and rest is None:
            return None
        left = pace * (total - done) + (rest["total"] - rest["select"] if rest else 0.0)
        return f"≈ {left:.0f} s left ({method}: {pace:.1f} s per fact so far in this comparison)"

    def show(self, report) -> None:
        self._draw_table(report)
        self._live = {}
        self._estimate()  # now from this comparison's own seconds (before the chart, which a reader waits on)
        sequential = [r for r in report.reports if r.curve]
        self.chart.children = (compare_figure(report),) + ((curves_figure(sequential),) if sequential else ())
        self.state.emit("weights")  # the comparison reverted its edits; redraw what depends on weights

    def _draw_table(self, report) -> None:
        rows = []
        for r in report.reports:
            s, ivs = r.summary, r.summary.get("intervals") or {}
            row = {"method": s["method"]}
            for key in COLUMNS[1:]:
                row[key] = rate_cell(s.get(key), ivs.get(key)) if key in RATES else s.get(key)
            row["nkl"] = None if s.get("nkl") is None else f"{s['nkl']:.3f}"
            if s.get("partial"):
                row["n"] = f"{s['n']} of {s['n_total']} so far"
            rows.append(row)
        cols = [c for c in COLUMNS if any(row.get(c) not in (None, "") for row in rows)]
        self.table.value = table(rows, cols, css="wb-compare-rows", formats={"seconds_per_edit": ".1f"},
                                 headers=HEADERS)
        first = report.reports[0].rows if report.reports else []
        self.facts_line.value = ("<span style='color:#555'>" + html.escape(self._facts_text(first))
                                 + html.escape(self._steps_note) + "</span>")

    def _facts_text(self, rows) -> str:
        """``Facts: A: x → y (the current fact); B: ...``, or why the current fact is not among them."""
        current = self._current
        first = bool(rows) and current is not None and same_fact(rows[0], current)
        listed = "; ".join(f"{r.subject}: {r.target_true} → {r.target_new}"
                           + (" (the current fact)" if i == 0 and first else "") for i, r in enumerate(rows))
        if current is None or first:
            return f"Facts: {listed}"
        if not current.target_new:
            return f"Facts: {listed} (not the current fact: it has no new object to edit towards)"
        return (f"Facts: {listed} (not the current fact, {current.subject}: {current.target_true} → "
                f"{current.target_new}: the model does not answer its prompt with {current.target_true})")

    def show_committed(self, folder=None) -> None:
        """Draw every committed sequential curve in one plot, with a line per run saying how far it got."""
        reports = committed_curves(folder)
        if not reports:
            self.curves.children = (widgets.HTML("No committed sequential curves found."),)
            return
        lines = []
        for r in reports:
            last = r.curve[-1]
            k = (r.settings or {}).get("batch_size") or 1
            lines.append(html.escape(
                f"{r.summary['method']}{f' ×{k}' if k > 1 else ''}: {last.n_edits} edits, edit prompts "
                f"{100 * (last.efficacy_score or 0):.0f} %, paraphrases {100 * (last.paraphrase_score or 0):.0f} %, "
                f"neighbours {100 * (last.neighborhood_score or 0):.0f} %, perplexity "
                f"{r.curve[0].perplexity:.1f} → {last.perplexity:.1f}"))
        self.curves.children = (widgets.HTML("<br>".join(lines)), curves_figure(reports))


def rate_cell(value: float | None, interval: list[float] | None) -> str:
    """A rate in % with its interval's half-width: ``"67 ± 24 %"`` (empty when not measured).

    Example:
        >>> rate_cell(0.667, [0.333, 1.0])
        '67 ± 33 %'
    """
    if value is None:
        return ""
    if not interval:
        return f"{100 * value:.0f} %"
    return f"{100 * value:.0f} ± {100 * (interval[1] - interval[0]) / 2:.0f} %"
