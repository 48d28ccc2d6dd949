"""Knockout panel: how attention carries the current fact's answer to the last token.

Run blocks the attention edges into the last token from the subject, from the
other tokens and from the last token itself, over a window of layers around
each layer (:func:`~workbench.locate.knockout`), and draws one line per group;
with "attribute rate" on it also draws how many of the subject's attributes its
last token spells after each layer (:func:`~workbench.locate.enrichment`).
"Answer" scores another word, e.g. an edit's new object after the edit.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from workbench.figures.knockout import enrichment_figure, knockout_figure
from workbench.locate import enrichment, knockout
from workbench.ui.state import State, Task
from workbench.ui.widgets import ErrorLine, quoted

#: The paper's window of layers; a shallower model gets its depth.
WINDOW = 9


class KnockoutPanel(widgets.VBox):
    def __init__(self, state: State, *, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        # Not a BoundedIntText: a window past the model's depth gets the library's sentence, not a silent clamp.
        self.window = widgets.IntText(value=min(WINDOW, state.model.n_layers), description="Window")
        self.window.add_class("wb-knockout-window")
        self.answer = widgets.Text(description="Answer", placeholder="the model's top-1")
        self.answer.add_class("wb-knockout-answer")
        self.with_enrichment = widgets.Checkbox(value=True, indent=False, description="attribute rate",
                                                tooltip="also the share of the subject's attributes among the "
                                                        "top 50 tokens of its last token, per layer")
        self.task = Task("Run knockout", css="wb-knockout-run", error=self.error, background=background, state=state)
        self.task.button.on_click(lambda _: self.run())
        self.summary = widgets.HTML()
        self.summary.add_class("wb-knockout-summary")
        self.figures = widgets.VBox()
        self.figures.add_class("wb-knockout-figures")
        self.result = None
        self.enriched = None
        state.on("fact", self._clear)
        state.on("weights", self._weights_changed)
        super().__init__([
            widgets.HTML("<b>Attention knockout</b> (Geva et al. 2023): cut the attention edges into the last "
                         "token from one group of tokens, over a window of layers around each layer, and see how "
                         "much p(answer) drops. A deep drop for the subject's edges in upper-middle layers is "
                         "where attention reads the answer off the subject."),
            widgets.HBox([self.window, self.answer, self.with_enrichment]), self.task, self.error, self.summary,
            self.figures,
        ])
        self.add_class("wb-knockout-panel")

    def _clear(self) -> None:
        self.figures.children = ()
        self.summary.value = ""
        self.result = self.enriched = None

    def _weights_changed(self) -> None:
        if self.result is not None:
            self.summary.value += ("<br><i style='color:#8a5a00'>The weights changed since this run: run it again "
                                   "(with the new object as Answer) to see the edited model.</i>")

    def run(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        model = self.state.model
        window = int(self.window.value)
        answer = self.answer.value.strip() or None
        enrich = bool(self.with_enrichment.value)

        def work(token):
            result = knockout(model, fact, window=window, answer=answer)
            token.check()
            enriched = enrichment(model, fact) if enrich else None
            return result, enriched

        self.task.run(work, lambda got: self.show(*got), busy="knocking out attention edges…")

    def show(self, result, enriched=None) -> None:
        """Display a :class:`~workbench.locate.KnockoutResult` (and an enrichment), also for tests."""
        self.result, self.enriched = result, enriched
        worst = {g: min(range(len(c)), key=lambda i: c[i]) for g, c in result.changes.items() if c}
        drops = "; ".join(f"{html.escape(g)}: {100 * result.changes[g][i]:+.0f}% at layer {result.layers[i]}"
                          for g, i in worst.items())
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
        self.summary.value = (
            f"Answer <b>{html.escape(quoted(result.answer))}</b>: p={result.clean_prob:.3f} unblocked; largest drops: "
            f"{drops}; {result.seconds:.1f} s" + (f"<ul style='color:#8a5a00'>{warn}</ul>" if warn else ""))
        figs = [go.FigureWidget(knockout_figure(result))]
        if enriched is not None:
            figs.append(go.FigureWidget(enrichment_figure(enriched)))
        for fig in figs:
            fig.update_layout(width=760)
        self.figures.children = tuple(figs)
