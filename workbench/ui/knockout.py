"""Knockout panel: how attention carries the current fact's answer to the last token.

Run blocks the attention edges into the last token from the subject, from the
other tokens and from the last token itself, over a window of layers around
each layer (:func:`~workbench.locate.knockout`), and draws one line per group;
with "attribute rate" on it also draws how many of the subject's attributes its
last token spells after each layer (:func:`~workbench.locate.enrichment`).
"Answer" scores another word.

After an edit the panel runs twice: the unedited model towards the true object
(:func:`~workbench.editing.unedited`, the edit stays applied) and the model as it
is now towards the new object, overlaid; where the subject curves part is where
the edited fact is read. Clicking a point opens the FFN memories at the
subject's last token and that layer (as a click on the Trace heatmap does).
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from workbench.editing import active_edits, unedited
from workbench.figures.knockout import enrichment_figure, knockout_comparison_figure, knockout_figure
from workbench.locate import enrichment, knockout
from workbench.snippets import Call, Code
from workbench.ui.code import cell
from workbench.ui.state import State, Task
from workbench.ui.widgets import CodeView, ErrorLine, guarded, quoted

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
        self.selection = widgets.HTML()
        self.selection.add_class("wb-knockout-selection")
        self.result = None
        self.before = None  # the unedited model's run, when edits were applied
        self.enriched = None
        self.code = CodeView("wb-knockout-code")
        state.on("fact", self._clear)
        state.on("weights", self._weights_changed)
        super().__init__([
            widgets.HTML("<b>Attention knockout</b> (Geva et al. 2023): cut the attention edges into the last "
                         "token from one group of tokens, over a window of layers around each layer, and see how "
                         "much p(answer) drops. A deep drop for the subject's edges in upper-middle layers is "
                         "where attention reads the answer off the subject."),
            widgets.HBox([self.window, self.answer, self.with_enrichment]), self.task, self.code, self.error,
            self.summary,
            self.figures, self.selection,
        ])
        self.add_class("wb-knockout-panel")

    def _clear(self) -> None:
        if not self.task.running:
            self.task.status.value = ""  # it spoke of the last fact's run
        self.figures.children = ()
        self.summary.value = self.selection.value = ""
        self.result = self.before = self.enriched = None
        self.code.set("")

    def _weights_changed(self) -> None:
        if self.result is not None:
            self.summary.value += ("<br><i style='color:#8a5a00'>The edits changed since this run: run it again to "
                                   "see the model as it is now beside the unedited one.</i>")

    def _new_object(self, fact, edits) -> str | None:
        """What the edited model should now say: the latest edit's new object for this subject,
        else the fact's own new object."""
        for handle in reversed(edits):
            for edited in handle.facts:
                if (edited.get("subject") or "").strip() == fact.subject.strip() and edited.get("target_new"):
                    return edited["target_new"]
        return fact.target_new

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
            edits = active_edits(model)
            new = answer or (self._new_object(fact, edits) if edits else None)
            calls = []
            if edits and new:
                # The same prompt twice: the weights as they were, scored on the true object, and as they are.
                with unedited(model):
                    before = knockout(model, fact, window=window, answer=fact.target_true)
                token.check()
                result = knockout(model, fact, window=window, answer=new)
                prompt_only = all(not h.changes_weights for h in edits)
                calls.append(Call(knockout, (fact,), {"window": window, "answer": fact.target_true},
                                  result="before", within=Code("wb.unedited(model)")))
                calls.append(Call(knockout, (fact,), {"window": window, "answer": new}))
            else:
                before, prompt_only = None, False
                result = knockout(model, fact, window=window, answer=answer)
                calls.append(Call(knockout, (fact,), {"window": window, "answer": answer}))
            token.check()
            enriched = enrichment(model, fact) if enrich else None
            if enrich:
                calls.append(Call(enrichment, (fact,), result="enriched"))
            return result, enriched, before, prompt_only, cell(self.state, calls)

        def done(got) -> None:
            self.show(got[0], got[1], before=got[2], prompt_only=got[3])
            self.code.set(got[4])

        self.task.run(work, done, busy="knocking out attention edges…")

    def show(self, result, enriched=None, *, before=None, prompt_only: bool = False) -> None:
        """Display a :class:`~workbench.locate.KnockoutResult` (and an enrichment), also for tests;
        ``before``: the unedited model's run, drawn under it (dashed)."""
        self.result, self.enriched, self.before = result, enriched, before
        self.selection.value = ""

        def drops(r) -> str:
            worst = {g: min(range(len(c)), key=lambda i: c[i]) for g, c in r.changes.items() if c}
            return "; ".join(f"{html.escape(g)}: {100 * r.changes[g][i]:+.0f}% at layer {r.layers[i]}"
                             for g, i in worst.items())

        warn = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
        head = (f"Answer <b>{html.escape(quoted(result.answer))}</b>: p={result.clean_prob:.3f} unblocked; largest "
                f"drops: {drops(result)}; {result.seconds:.1f} s")
        if before is not None:
            head = (f"<b>Now</b> (edited) — {head}<br><b>Before</b> (unedited) — answer "
                    f"<b>{html.escape(quoted(before.answer))}</b>: p={before.clean_prob:.3f} unblocked; largest drops: "
                    f"{drops(before)}")
            if prompt_only:
                head += ("<br><i style='color:#8a5a00'>The applied edits change no weights: knockout reads the "
                         "question alone, not the text an in-context or retrieval edit puts before it.</i>")
        self.summary.value = head + (f"<ul style='color:#8a5a00'>{warn}</ul>" if warn else "") + (
            "<br><i>Click a point: the FFN memories at the subject's last token, that layer.</i>")
        main = knockout_figure(result) if before is None else knockout_comparison_figure(before, result)
        figs = [go.FigureWidget(main)]
        for trace in figs[0].data:
            trace.on_click(self._clicked)
        if enriched is not None:
            figs.append(go.FigureWidget(enrichment_figure(enriched)))
        for fig in figs:
            fig.update_layout(width=760)
        self.figures.children = tuple(figs)

    def _clicked(self, trace, points, selector) -> None:
        if points.point_inds:
            guarded(self.error, self.select)(int(points.xs[0]))

    def select(self, layer: int) -> None:
        """What a click on a layer does: the Memories tab at the subject's last token and that layer."""
        result = self.result
        if result is None:
            return
        position = result.subject_range[1] - 1
        self.selection.value = (f"Selected the subject's last token {position} "
                                f"<b>{html.escape(quoted(result.tokens[position]))}</b>, layer <b>{int(layer)}</b> "
                                "→ Memories tab")
        self.state.select(position, int(layer))
