"""Thin FigureWidget wrappers around the library's pure figure functions.

Each wrapper asks ``workbench.figures.*`` for the figure and turns it into a
``go.FigureWidget`` (so clicks reach Python); the only changes made here are
layout ones a panel needs (click mode, width) and whitespace tokens drawn as
the rest of the UI draws them (⎵).
"""

from __future__ import annotations

import plotly.graph_objects as go

from workbench.figures.evaluation import degradation_figure, scores_figure
from workbench.figures.memories import neuron_attributions, sub_update_bars
from workbench.figures.tracing import trace_figure as library_trace_figure
from workbench.ui.widgets import visible


def _widget(fig) -> go.FigureWidget:
    return fig if isinstance(fig, go.FigureWidget) else go.FigureWidget(fig)


def trace_figure(result, kind: str) -> go.FigureWidget:
    """A heatmap of one kind of a trace: rows = tokens, columns = layers.

    One kind per figure, so that a click names its kind; rows are the token
    labels, made unique by the library.
    """
    fig = _widget(library_trace_figure(result, kinds=[kind]))
    # Room for the library's one-line title (prompt, answer, probabilities).
    fig.update_layout(clickmode="event", width=max(fig.layout.width or 0, 760), title_font_size=13)
    # A whitespace answer or token is drawn as the rest of the UI draws it (⎵), not as "p()" or a blank row.
    answer = result.answer.strip() or visible(result.answer)
    for heatmap in fig.data:
        heatmap.colorbar.title.text = f"p({answer})"
        heatmap.y = [_visible_label(label) for label in heatmap.y]
    title = fig.layout.title.text or ""
    fig.layout.title.text = title.replace(f"→ {result.answer!r}", f"→ '{visible(result.answer)}'", 1)
    return fig


def _visible_label(label: str) -> str:
    """A heatmap row label with a whitespace token drawn visibly (the subject's ``*`` and the
    zero-width marks that keep repeated rows apart stay)."""
    core = label.rstrip("\u200b")
    tail = label[len(core):]
    star = core.endswith("*") and len(core) > 1
    word = core[:-1] if star else core
    if word.strip():
        return label
    return visible(word) + ("*" if star else "") + tail


def sub_update_figure(report, *, by: str = "weight", only_readable: bool = True) -> go.FigureWidget:
    """Bars of a :class:`~workbench.locate.MemoryReport`'s sub-updates, in the memories
    table's order (``by``) with its token filter (``only_readable``)."""
    return _widget(sub_update_bars(report, by=by, only_readable=only_readable))


def neuron_figure(report) -> go.FigureWidget:
    """Attribution chart of a :class:`~workbench.locate.NeuronReport`."""
    return _widget(neuron_attributions(report))


def compare_figure(result, metrics: str = "critics") -> go.FigureWidget:
    """Bar chart of a method comparison (teacher-forced beside generated, with intervals)."""
    return _widget(scores_figure(result, metrics=metrics))


def curves_figure(reports, metric: str = "efficacy_score") -> go.FigureWidget:
    """Sequential curves of several methods in one plot (edits on a log axis), and perplexity."""
    return _widget(degradation_figure(reports, metric=metric))
