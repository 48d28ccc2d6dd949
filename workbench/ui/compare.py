"""Compare panel: several editing methods on the same small set of facts."""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.evaluation import compare
from workbench.ui.state import State, Task
from workbench.ui.widgets import WIDE, ClampedIntText, ErrorLine, table
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


def committed_curves(folder=None) -> list:
    """The sequential-editing reports committed under ``assets/results/sequential_1k`` (empty if none)."""
    from pathlib import Path

    from workbench.evaluation.evaluate import read_report
    from workbench.facts import ASSETS

    folder = Path(folder) if folder is not None else ASSETS / "results" / "sequential_1k"
    return [read_report(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


class ComparePanel(widgets.VBox):
    def __init__(self, state: State, *, facts=None, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        self.facts = facts  # None: the bundled facts
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
                                     description="Mode")
        self.said = widgets.Checkbox(value=True, indent=False, layout=widgets.Layout(width="auto"),
                                     description="Also score the generated answers (about twice the time)")
        self.said.add_class("wb-compare-said")
        self.estimate = widgets.HTML()
        self.estimate.add_class("wb-compare-estimate")
        for w in (self.methods, self.limit, self.said):
            w.observe(lambda _: self._estimate(), "value")
        self.task = Task("Compare", css="wb-compare-run", error=self.error, background=background, state=state)
        self.task.button.on_click(lambda _: self.run())
        self.table = widgets.HTML()
        self.table.add_class("wb-compare-table")
        self.chart = widgets.VBox()
        self.chart.add_class("wb-compare-chart")
        self.facts_line = widgets.HTML()
        self.facts_line.add_class("wb-compare-facts")
        self.curves_button = widgets.Button(description="Committed 1,000-edit curves",
                                            layout=widgets.Layout(width="auto"),  # its label whole
                                            tooltip="every method's sequential run on the shared CounterFact "
                                                    "records, as measured and committed (no model needed)")
        self.curves_button.add_class("wb-compare-curves-button")
        self.curves_button.on_click(lambda _: self.show_committed())
        self.curves = widgets.VBox()
        self.curves.add_class("wb-compare-curves")
        super().__init__([
            widgets.HTML("<b>Compare methods</b> on the first known facts of the bundled set. Each rate is the "
                         "share of prompts (%) where the edit behaves as intended: <i>p</i> compares the two "
                         "objects' probabilities after the prompt (teacher-forced, as the methods' papers do); "
                         "<i>said</i> reads the model's own greedy answer (as their critics do). "
                         "± is a 95 % bootstrap interval over the facts; with a handful of facts it is wide. "
                         "Edits are reverted after scoring."),
            widgets.HBox([self.methods, widgets.VBox([self.limit.row, self.mode, self.said])]),
            self.task, self.estimate, self.error, self.table, self.facts_line, self.chart,
            widgets.HTML("<b>Many edits, one after another.</b> In <i>sequential</i> mode the run's own "
                         "curve appears above; the committed runs (up to 1,000 edits each) are here:"),
            self.curves_button, self.curves,
        ])
        self.add_class("wb-compare-panel")
        self._estimate()

    def estimated_seconds(self) -> float | None:
        """Seconds the comparison should take, from the committed runs' seconds per fact
        (teacher-forced scoring; the generated answers about double it). None if a method has no run."""
        from workbench.ui.edit import measured_cost

        total = 0.0
        for method in self.methods.value:
            cost = measured_cost(method)
            if cost is None or cost["per_fact"] is None:
                return None
            total += cost["per_fact"] * int(self.limit.value)
        return total * (2 if self.said.value else 1)

    def _estimate(self) -> None:
        seconds = self.estimated_seconds()
        self.estimate.value = ("" if seconds is None else
                               f"<span style='color:#555'>≈ {seconds:.0f} s by the committed runs' seconds per "
                               "fact on this CPU (assets/results/*_independent.json)</span>")

    def run(self) -> None:
        try:
            chosen = list(self.methods.value)
            if not chosen:
                raise WorkbenchError("choose at least one method")
            from workbench.facts import bundled_facts

            facts = [f for f in (self.facts if self.facts is not None else bundled_facts()) if f.target_new]
            if not facts:
                raise WorkbenchError("no facts with a new object to compare on")
        except WorkbenchError as exc:
            self.error.show(exc)
            return
        model, limit, mode = self.state.model, int(self.limit.value), self.mode.value
        self._steps_note = (f" With {limit} fact{'s' if limit != 1 else ''} a rate can only be "
                            + ", ".join(f"{100 * k // limit} %" for k in range(limit + 1))
                            + f"; {MIN_FACTS} or more make the differences readable."
                            if limit < MIN_FACTS else "")
        metrics = "teacher,generation,question,plus" if self.said.value else "teacher"
        # Perplexity and fluency are not in this table and cost most of a short run's time:
        # measured only in the modes whose curves show them.
        # Independent runs fill the table fact by fact: the first row is read while the rest run.
        growing = self.show_partial if mode == "independent" else None
        # search_chunk=1: each fact's target search in its own edit, so the first row comes
        # after one search, not after a batch of them.
        self.task.run(lambda token: compare(model, facts, methods=chosen, mode=mode, limit=limit, cancel=token,
                                            metrics=metrics, drift=mode != "independent", on_update=growing,
                                            search_chunk=1),
                      self.show, busy="evaluating…")

    def show_partial(self, report) -> None:
        """The table so far (a comparison still running): no chart until it ends."""
        if self.chart.children:
            self.chart.children = ()  # the last comparison's chart; this one's is drawn at its end
        self._draw_table(report)

    def show(self, report) -> None:
        self._draw_table(report)
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
        self.facts_line.value = ("<span style='color:#555'>Facts: " + "; ".join(
            html.escape(f"{r.subject}: {r.target_true} → {r.target_new}") for r in first)
            + html.escape(getattr(self, "_steps_note", "")) + "</span>")

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
