"""Trace panel: causal tracing of the current fact, as clickable heatmaps.

Clicking a cell selects that (token, layer) and opens the memory panel there.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.locate import trace
from workbench.ui.common import ErrorLine, State, Task, guarded
from workbench.ui.figures import trace_figure

KINDS = ("mlp", "attn", "resid")


class TracePanel(widgets.VBox):
    def __init__(self, state: State, *, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        self.kinds = widgets.SelectMultiple(options=list(KINDS), value=("mlp",), rows=3, description="Kinds")
        self.kinds.add_class("wb-trace-kinds")
        self.samples = widgets.BoundedIntText(value=10, min=1, max=100, description="Samples")
        self.samples.add_class("wb-trace-samples")
        self.window = widgets.BoundedIntText(value=10, min=1, max=1000, description="Window")
        self.window.add_class("wb-trace-window")
        self.noise = widgets.BoundedFloatText(value=3.0, min=0.0, max=100.0, step=0.5, description="Noise ×σ")
        self.task = Task("Run trace", css="wb-trace-run", error=self.error, background=background, state=state,
                         total=lambda: len(self.kinds.value) * self.state.model.n_layers)
        self.task.button.on_click(lambda _: self.run())
        self.summary = widgets.HTML()
        self.summary.add_class("wb-trace-summary")
        self.figures = widgets.VBox()
        self.figures.add_class("wb-trace-figures")
        self.selection = widgets.HTML()
        self.selection.add_class("wb-trace-selection")
        self.figure_widgets: dict[str, object] = {}
        state.on("fact", self._fact_changed)
        super().__init__([
            widgets.HTML("<b>Causal tracing</b>: noise on the subject, then restore one hidden state at a time. "
                         "Click a cell to open the FFN memories at that token and layer."),
            widgets.HBox([self.kinds, widgets.VBox([self.samples, self.window, self.noise])]),
            self.task, self.error, self.summary, self.figures, self.selection,
        ])
        self.add_class("wb-trace-panel")

    def _fact_changed(self) -> None:
        self.figures.children = ()
        self.figure_widgets = {}
        self.summary.value = ""
        self.selection.value = ""

    def run(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        kinds = list(self.kinds.value) or ["mlp"]
        samples, window, noise = int(self.samples.value), int(self.window.value), float(self.noise.value)
        model = self.state.model
        self.task.run(lambda token: trace(model, fact, kinds=kinds, samples=samples, window=window,
                                          noise=noise, cancel=token),
                      self.show, busy="tracing…")

    def show(self, result) -> None:
        """Display a :class:`~workbench.locate.TraceResult` (also used by tests)."""
        self.state.trace = result
        self.state.emit("trace")
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in getattr(result, "warnings", []) or [])
        self.summary.value = (
            f"Answer <b>{html.escape(result.answer)}</b>: clean p={result.clean_prob:.3f}, "
            f"corrupted p={result.corrupted_prob:.3f}; {getattr(result, 'seconds', 0):.1f} s"
            + (f"<ul style='color:#8a5a00'>{warn}</ul>" if warn else "")
        )
        figs = {}
        for kind in result.scores:
            fig = trace_figure(result, kind)
            for trace in fig.data:
                trace.on_click(self._clicked(kind))
            figs[kind] = fig
        self.figure_widgets = figs
        boxes = []
        for kind, fig in figs.items():
            box = widgets.VBox([fig])
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
        self.selection.value = (f"Selected token {position} <b>{html.escape(repr(token))}</b>, layer <b>{layer}</b> "
                                f"({kind}) → Memories tab")
        self.state.select(position, layer)
