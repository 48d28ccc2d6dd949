"""Thin FigureWidget wrappers around the library's pure figure functions.

Each wrapper asks ``workbench.figures.*`` for the figure and turns it into a
``go.FigureWidget`` (so clicks reach Python). Where this install has no library
figure for a result yet, a plain plotly chart of the result's own numbers stands
in (no computation: the numbers are plotted as they are) and the figure's title
says so.
"""

from __future__ import annotations

import importlib
import inspect

import plotly.graph_objects as go


def _library_figure(modules: tuple[str, ...], names: tuple[str, ...], *args, **kwargs):
    """The first of ``workbench.figures.<module>.<name>`` that exists, called; else None."""
    for module in modules:
        try:
            mod = importlib.import_module(f"workbench.figures.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("workbench"):
                continue
            raise
        for name in names:
            fn = getattr(mod, name, None)
            if fn is None:
                continue
            params = inspect.signature(fn).parameters
            usable = {k: v for k, v in kwargs.items() if k in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())}
            return fn(*args, **usable)
    return None


def _widget(fig) -> go.FigureWidget:
    return fig if isinstance(fig, go.FigureWidget) else go.FigureWidget(fig)


def trace_figure(result, kind: str) -> go.FigureWidget:
    """A heatmap of one kind of a trace: rows = tokens, columns = layers.

    The library's ``trace_figure`` draws it (one kind per figure, so a click names its
    kind); rows are the token labels, made unique by the library.
    """
    fig = _library_figure(("tracing",), ("trace_figure",), result, kinds=[kind])
    if fig is None:
        import numpy as np

        grid = np.asarray(result.scores[kind], dtype=float)
        start, end = result.subject_range
        labels = [f"{t!r}{'*' if start <= i < end else ''}" for i, t in enumerate(result.tokens)]
        fig = go.Figure(go.Heatmap(
            z=grid, x=list(range(grid.shape[1])), y=list(range(grid.shape[0])), colorscale="Purples",
            colorbar={"title": "p"}, hovertemplate="token %{y}, layer %{x}: p=%{z:.3f}<extra></extra>",
        ))
        fig.update_yaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, autorange="reversed")
        fig.update_layout(
            title=f"{kind}: p({result.answer.strip()}) restoring one state (* = subject)",
            xaxis_title="layer", height=120 + 22 * len(labels), margin={"l": 140, "r": 20, "t": 40, "b": 40},
        )
    fig = _widget(fig)
    # Room for the library's one-line title (prompt, answer, probabilities).
    fig.update_layout(clickmode="event", width=max(fig.layout.width or 0, 760), title_font_size=13)
    return fig


def sub_update_figure(report) -> go.FigureWidget | None:
    """Bars of a :class:`~workbench.memories.MemoryReport`'s sub-updates (library figure only)."""
    fig = _library_figure(("memories",), ("sub_update_bars",), report)
    return None if fig is None else _widget(fig)


def bar_figure(x, y, *, title: str, xaxis: str = "", yaxis: str = "") -> go.FigureWidget:
    fig = go.Figure(go.Bar(x=list(x), y=list(y)))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=320,
                      margin={"l": 50, "r": 20, "t": 40, "b": 80})
    return _widget(fig)


def neuron_figure(report) -> go.FigureWidget:
    """Attribution chart of a :class:`~workbench.neurons.NeuronReport`."""
    fig = _library_figure(("memories", "neurons"), ("neuron_attributions",), report)
    if fig is None:
        top = list(report.top)[:30]
        fig = go.Figure(go.Bar(
            x=[f"L{n.layer}·{n.key}" for n in top], y=[n.attribution for n in top],
            marker_color=["#6a3d9a" if n.share >= report.share else "#bbbbbb" for n in top],
        ))
        fig.update_layout(title=f"Integrated-gradient attribution to {report.target_token!r} (purple: knowledge neurons)",
                          xaxis_title="layer·key", yaxis_title="attribution", height=320,
                          margin={"l": 50, "r": 20, "t": 40, "b": 80})
    return _widget(fig)


def compare_figure(result) -> go.FigureWidget:
    """Bar chart of a method comparison."""
    fig = _library_figure(("evaluation",), ("scores_figure",), result)
    if fig is None:
        df = result.to_pandas() if hasattr(result, "to_pandas") else result
        numeric = [c for c in ("efficacy_score", "paraphrase_score", "neighborhood_score", "implication_score")
                   if c in df.columns and df[c].notna().any()]
        fig = go.Figure()
        methods = df["method"].tolist() if "method" in df.columns else [str(i) for i in df.index]
        for c in numeric:
            fig.add_bar(name=c, x=methods, y=df[c].tolist())
        fig.update_layout(barmode="group", title="Methods compared", height=340,
                          margin={"l": 50, "r": 20, "t": 40, "b": 80})
    return _widget(fig)
