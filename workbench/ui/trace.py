"""Trace panel: causal tracing of the current fact, as clickable heatmaps.

A run first draws the attribution preview (one forward and one backward pass,
an approximation, labelled as one) and replaces it with the exact trace when
that arrives. After a weight edit, "Re-trace the edit" traces the edited
model towards the new object and shows it beside the trace from before the edit.
Clicking a cell selects that (token, layer) and opens the memory panel there.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.locate import TraceSettings, trace
from workbench.locate.trace_cache import cached_trace
from workbench.snippets import Call, defaults_of
from workbench.ui.code import cell
from workbench.ui.state import State, Task
from workbench.ui.widgets import ClampedFloatText, ClampedIntText, CodeView, ErrorLine, guarded, quoted, visible
from workbench.ui.figures import trace_figure

#: The kinds in the order the panel lists them: the FFN first, where the edits write.
KINDS = ("mlp", "attn", "resid")
#: Few noisy copies by default: the trace answers in seconds; raise it for smoother grids.
DEFAULT_SAMPLES = 3
#: The panel's other settings start at the library's defaults.
DEFAULTS = TraceSettings()
PREVIEW_NOTE = ("Preview: attribution patching, a first-order estimate from one forward and one backward pass. "
                "A rough sketch: on 50 known facts it named the exact trace's peak layer for 6. "
                "The exact trace replaces it when it is done.")


class TracePanel(widgets.VBox):
    def __init__(self, state: State, *, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        self.kinds = widgets.SelectMultiple(options=list(KINDS), value=("mlp",), rows=3, description="Kinds")
        self.kinds.add_class("wb-trace-kinds")
        # Fields that say when they clamp (a bounded field turned 250 samples into 100 unseen).
        self.samples = ClampedIntText(value=DEFAULT_SAMPLES, lo=1, hi=100, description="Samples")
        self.samples.add_class("wb-trace-samples")
        self.window = ClampedIntText(value=DEFAULTS.window, lo=1, hi=1000, description="Window")
        self.window.add_class("wb-trace-window")
        self.noise = ClampedFloatText(value=DEFAULTS.noise, lo=0.0, hi=100.0, step=0.5, description="Noise ×σ")
        self.noise.add_class("wb-trace-noise")
        self.task = Task("Run trace", css="wb-trace-run", error=self.error, background=background, state=state,
                         total=lambda: len(self.kinds.value) * self.state.model.n_layers)
        self.task.button.on_click(lambda _: self.run())
        self.retrace_task = Task("Re-trace the edit", css="wb-trace-retrace", error=self.error,
                                 background=background, state=state,
                                 total=lambda: len(self.kinds.value) * self.state.model.n_layers)
        self.retrace_task.button.on_click(lambda _: self.retrace())
        self.retrace_task.button.tooltip = ("Trace the edited model towards the new object, beside the trace "
                                            "from before the edit: does the new fact live where it was written?")
        self.note = widgets.HTML()
        self.note.add_class("wb-trace-note")
        #: The last exact trace on unedited weights (what a re-trace is shown beside).
        self.before_edit = None
        #: Why the last run traced the true object and not the model's top-1 ("" when it did not).
        self.answer_note = ""
        self.summary = widgets.HTML()
        self.summary.add_class("wb-trace-summary")
        self.figures = widgets.VBox()
        self.figures.add_class("wb-trace-figures")
        self.selection = widgets.HTML()
        self.selection.add_class("wb-trace-selection")
        self.figure_widgets: dict[str, object] = {}
        self.code = CodeView("wb-trace-code")
        state.on("fact", self._fact_changed)
        super().__init__([
            widgets.HTML("<b>Causal tracing</b>: noise on the subject, then restore one hidden state at a time. "
                         "Click a cell to open the FFN memories at that token and layer."),
            widgets.HBox([self.kinds, widgets.VBox([self.samples.row, self.window.row, self.noise.row])]),
            widgets.HBox([self.task, self.retrace_task]), self.code, self.error, self.note, self.summary, self.figures,
            self.selection,
        ])
        self.add_class("wb-trace-panel")

    def _fact_changed(self) -> None:
        if not self.task.running:
            self.task.status.value = ""  # it spoke of the last fact's trace ("prepared ahead", its time)
        self.figures.children = ()
        self.figure_widgets = {}
        self.summary.value = ""
        self.selection.value = ""
        self.note.value = ""
        self.answer_note = ""
        self.before_edit = None
        self.code.set("")

    def _edited_layers(self) -> list[int]:
        from workbench.editing import active_edits

        return sorted({layer for h in active_edits(self.state.model) for layer in h.layers})

    def settings(self, answer: str | None = None) -> TraceSettings:
        """The trace settings the widgets show (``answer``: score that word instead of the top-1).

        Example:
            >>> app.trace.settings().samples   # doctest: +SKIP
            3
        """
        return TraceSettings(kinds=tuple(self.kinds.value) or ("mlp",), samples=int(self.samples.value),
                             window=int(self.window.value), noise=float(self.noise.value), answer=answer)

    def run(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        model = self.state.model
        decided = self._from_cache(fact)
        if decided is True:
            return
        settings = decided

        def work(token):
            chosen = settings
            if chosen is None:  # the model was busy at the click: what to trace is decided now
                answer, self.answer_note = self._answer(model, fact)
                chosen = self.settings(answer=answer)
            preview = trace(model, fact, settings=chosen, method="attribution")
            self.show(preview)
            self.task.status.value = f"preview in {preview.seconds:.1f} s; exact trace…"
            # cache=True: kept on disk, so the next run of these settings answers at once.
            result = trace(model, fact, settings=chosen, cancel=token, cache=True)
            return result, cell(self.state, trace_call(fact, chosen, cache=True))

        # The last heatmaps were of other settings (or another model state): gone until the preview.
        self.figures.children = ()
        self.figure_widgets = {}
        self.summary.value = self.selection.value = ""
        self.task.run(work, self._traced, busy="tracing…")

    def _traced(self, got) -> None:
        result, code = got
        self.show(result)
        self.code.set(code)

    def _answer(self, model, fact) -> tuple[str | None, str]:
        """The word to trace, and why: None (the model's top-1) when that begins the true object
        or an edit is applied; else the true object, which the app knows (a fact the model does
        not know traced its top token, e.g. a space, and drew "p()")."""
        from workbench.editing import active_edits
        from workbench.facts import top_begins_true_object
        from workbench.probing import probe

        if not fact.target_true or active_edits(model):
            return None, ""
        top = probe(model, fact.text, top_k=1)[0].top[0].token
        if top_begins_true_object(model, fact, top):
            return None, ""
        return fact.target_true, (f"The model does not know this fact (its top answer is {quoted(top)}): traced "
                                  f"towards the true object {fact.target_true!r} (its first token) instead.")

    def _from_cache(self, fact) -> TraceSettings | bool | None:
        """Decide what to trace, and show the exact trace kept on disk for these weights and
        settings if there is one: True when shown, else the settings to trace (None: the
        model is busy, decide in the run)."""
        if self.task.running:
            return None
        try:
            # The model held (the greedy answers give way), so that no edit is under way meanwhile.
            with self.state.using() as model:
                answer, self.answer_note = self._answer(model, fact)
                settings = self.settings(answer=answer)
                # Asked before the run, so that a cached trace needs no preview either.
                found = cached_trace(model, fact, settings)
        except WorkbenchError:
            return None  # a task holds the model: trace as usual, after it
        if found is None:
            return settings
        self.error.clear()
        self.show(found)
        self.code.set(cell(self.state, trace_call(fact, settings, cache=True)))
        self.task.status.value = (f"from the trace cache (the same weights and settings, computed earlier in "
                                  f"{found.seconds:.1f} s)")
        return True

    def retrace(self) -> None:
        """Trace the edited model towards the fact's new object, beside the trace before the edit."""
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        if not self._edited_layers():
            self.error.show("No weight edit is applied: apply one in the Edit tab, then re-trace it here.")
            return
        if not fact.target_new:
            self.error.show("This fact has no new object to trace towards.")
            return
        settings = self.settings(answer=fact.target_new)
        model, before = self.state.model, self.before_edit

        def work(token):
            # No cache: a re-trace is of edited weights, which the cache never holds.
            after = trace(model, fact, settings=settings, cancel=token)
            return before, after, cell(self.state, trace_call(fact, settings))

        def done(got) -> None:
            self.show_retrace(*got[:2])
            self.code.set(got[2])

        self.retrace_task.run(work, done, busy="re-tracing the edit…")

    def show(self, result) -> None:
        """Display a :class:`~workbench.locate.TraceResult` (also used by tests)."""
        self.state.trace = result
        preview = getattr(result, "method", "trace") == "attribution"
        self.note.value = f"<i>{html.escape(PREVIEW_NOTE)}</i>" if preview else ""
        if not preview and not self._edited_layers():
            self.before_edit = result
        self.state.emit("trace")
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in getattr(result, "warnings", []) or [])
        towards = (f"<div class='wb-trace-answer-note' style='color:#8a4b00'>{html.escape(self.answer_note)}</div>"
                   if self.answer_note else "")
        self.summary.value = (
            towards + f"Answer <b>{html.escape(quoted(result.answer))}</b>: clean p={result.clean_prob:.3f}, "
            f"corrupted p={result.corrupted_prob:.3f}; {getattr(result, 'seconds', 0):.1f} s"
            + (f"<ul style='color:#8a5a00'>{warn}</ul>" if warn else "")
        )
        self._draw(result)

    def show_retrace(self, before, after) -> None:
        """The re-trace after an edit, beside the trace from before it (when there is one)."""
        layers = self._edited_layers()
        self.state.trace = after
        where = ", ".join(str(l) for l in layers) or "?"
        peak = {k: int(after.scores[k].max(axis=0).argmax()) for k in after.scores}
        peaks = "; ".join(f"{k} peaks at layer {v}" for k, v in peak.items())
        self.note.value = (
            f"<b>After the edit</b> (written at layer {where}): tracing p({html.escape(visible(after.answer))}), "
            f"clean p={after.clean_prob:.3f}, corrupted p={after.corrupted_prob:.3f}; {peaks}."
            + ("" if before is not None else " <i>Run a trace before editing to see the two side by side.</i>"))
        self.summary.value = (
            "" if before is None else
            f"<b>Before the edit</b>: p({html.escape(visible(before.answer))}) clean {before.clean_prob:.3f}, "
            f"corrupted {before.corrupted_prob:.3f}")
        self._draw(after, before=before)

    def _draw(self, result, before=None) -> None:
        figs = {}
        for kind in result.scores:
            fig = trace_figure(result, kind)
            for trace in fig.data:
                trace.on_click(self._clicked(kind))
            figs[kind] = fig
        self.figure_widgets = figs
        boxes = []
        for kind, fig in figs.items():
            beside = [trace_figure(before, kind)] if before is not None and kind in before.scores else []
            if beside:
                beside[0].update_layout(title=f"{kind}: before the edit, p({visible(before.answer.strip() or before.answer)})", width=560)
                fig.update_layout(title=f"{kind}: after the edit, p({visible(result.answer.strip() or result.answer)})", width=560)
            box = widgets.HBox(beside + [fig]) if beside else widgets.VBox([fig])
            box.add_class("wb-trace-heatmap")
            box.add_class(f"wb-trace-heatmap-{kind}")
            boxes.append(box)
        self.figures.children = boxes

    def _clicked(self, kind: str):
        def on_click(trace, points, selector) -> None:
            if not points.point_inds:
                return
            # Heatmap point indices are (row, column) = (token, layer).
            ind = points.point_inds[0]
            if isinstance(ind, (list, tuple)):
                position, layer = int(ind[0]), int(ind[1])
            else:
                y = points.ys[0]
                # Category rows: the label's index is the token position.
                position = list(trace.y).index(y) if isinstance(y, str) else int(y)
                layer = int(points.xs[0])
            guarded(self.error, self.select)(position, layer, kind)

        return on_click

    def select(self, position: int, layer: int, kind: str = "mlp") -> None:
        """What a click on cell (position, layer) does."""
        result = self.state.trace
        token = result.tokens[position] if result is not None else "?"
        self.selection.value = (f"Selected token {position} <b>{html.escape(quoted(token))}</b>, layer <b>{layer}</b> "
                                f"({kind}) → Memories tab")
        self.state.select(position, layer)


def trace_call(fact, settings: TraceSettings, **extra) -> Call:
    """The :func:`~workbench.locate.trace` call of ``settings``, its fields as keywords."""
    fields = {name: getattr(settings, name) for name in defaults_of(TraceSettings)}
    return Call(trace, (fact,), {**fields, **extra}, defaults=defaults_of(TraceSettings))

