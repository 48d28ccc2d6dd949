"""Compare panel: several editing methods on the same small set of facts."""

from __future__ import annotations

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.evaluation import compare
from workbench.ui.common import ErrorLine, State, Task, table
from workbench.ui.edit import methods
from workbench.ui.figures import compare_figure

#: Summary columns shown, in order (CounterFact rates; EasyEdit accuracies are a different metric).
COLUMNS = ("method", "efficacy_score", "paraphrase_score", "neighborhood_score", "implication_score", "score",
           "n_facts", "n_skipped", "n_failed", "seconds")
BARS = ("efficacy_score", "paraphrase_score", "neighborhood_score", "implication_score")


class ComparePanel(widgets.VBox):
    def __init__(self, state: State, *, facts=None, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        self.facts = facts  # None: the bundled facts
        options = methods()
        chosen = tuple(m for m in ("rome", "in-context", "retrieval") if m in options) or tuple(options[:2])
        self.methods = widgets.SelectMultiple(options=options, value=chosen, rows=min(7, max(2, len(options))),
                                              description="Methods")
        self.methods.add_class("wb-compare-methods")
        self.limit = widgets.BoundedIntText(value=3, min=1, max=1000, description="Facts")
        self.limit.add_class("wb-compare-limit")
        self.mode = widgets.Dropdown(options=["independent", "sequential", "batch"], value="independent",
                                     description="Mode")
        self.task = Task("Compare", css="wb-compare-run", error=self.error, background=background, state=state)
        self.task.button.on_click(lambda _: self.run())
        self.table = widgets.HTML()
        self.table.add_class("wb-compare-table")
        self.chart = widgets.VBox()
        self.chart.add_class("wb-compare-chart")
        super().__init__([
            widgets.HTML("<b>Compare methods</b> on the first known facts of the bundled set (CounterFact rates: "
                         "share of prompts where the edit behaves as intended). Edits are reverted after scoring."),
            widgets.HBox([self.methods, widgets.VBox([self.limit, self.mode])]),
            self.task, self.error, self.table, self.chart,
        ])
        self.add_class("wb-compare-panel")

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
        self.task.run(lambda token: compare(model, facts, methods=chosen, mode=mode, limit=limit, cancel=token),
                      self.show, busy="evaluating…")

    def show(self, report) -> None:
        df = report.to_pandas()
        cols = [c for c in COLUMNS if c in df.columns]
        rows = df[cols].to_dict("records")
        fmt = {c: ".2f" for c in cols if c.endswith("score")} | {"seconds": ".1f"}
        self.table.value = table(rows, cols, css="wb-compare-rows", formats=fmt)
        self.chart.children = (compare_figure(report),)
        self.state.emit("weights")  # the comparison reverted its edits; redraw what depends on weights
