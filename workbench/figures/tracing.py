"""Figures of causal traces: ROME-style heatmaps and average-indirect-effect curves.

Pure functions of :class:`~workbench.locate.TraceResult` /
:class:`~workbench.locate.AIEResult`: nothing is computed here.

Example:
    >>> fig = trace_figure(wb.trace(model, fact))
    >>> fig.show()   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: One colour family per kind, as in ROME's figures.
COLORSCALES = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
TITLES = {"resid": "single restored layer (residual stream)", "mlp": "restored MLP", "attn": "restored attention"}
#: Line colours of ROME's six token groups.
GROUP_COLORS = ("#1f77b4", "#17becf", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def row_labels(result) -> list[str]:
    """Token labels top to bottom; subject tokens get a ``*`` (ROME's convention).
    Repeated labels get a zero-width suffix so plotly keeps every row."""
    start, end = result.subject_range
    labels, seen = [], {}
    for i, tok in enumerate(result.tokens):
        label = repr(tok)[1:-1] or "␣"
        if start <= i < end:
            label += "*"
        n = seen.get(label, 0)
        seen[label] = n + 1
        labels.append(label + "\u200b" * n)
    return labels


def baseline_ticks(corrupted: float, clean: float, top: float) -> dict:
    """Colour-bar ticks that name the two reference points: the corrupted run (where the
    scale starts) and the clean run (when it lies on the scale), and the scale's top.

    Example:
        >>> baseline_ticks(0.01, 0.5, 0.6)["ticktext"]
        ['0.010 corrupted', '0.500 clean', '0.600']
    """
    marks = [(corrupted, f"{corrupted:.3f} corrupted")]
    if corrupted < clean <= top:
        marks.append((clean, f"{clean:.3f} clean"))
    # The top tick only when it is not crowding the clean one (a tenth of the scale apart).
    if not marks[-1][0] >= top - 0.1 * (top - corrupted):
        marks.append((top, f"{top:.3f}"))
    return {"tickvals": [v for v, _ in marks], "ticktext": [t for _, t in marks]}


def trace_figure(result, *, kinds: Sequence[str] | None = None, height_per_token: int = 22) -> go.Figure:
    """Heatmaps of p(answer) after restoring each (token, layer), one panel per kind.

    Rows are tokens (subject tokens marked ``*``), columns layers. Every panel's
    colour scale runs from the corrupted baseline (white: "restoring here brings
    nothing back") to the best restoration of any kind in the result, so that the
    colours of the mlp, attn and resid panels (also drawn one per figure) compare.

    Args:
        result: a :class:`~workbench.locate.TraceResult` (trace or patch).
        kinds: panels to draw (default: all kinds in the result).
        height_per_token: pixels per row.
    """
    kinds = [k for k in (kinds or result.kinds) if k in result.scores]
    labels = row_labels(result)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[TITLES.get(k, k) for k in kinds],
                        shared_yaxes=True, horizontal_spacing=0.08)
    # One scale for all kinds: the best cell of any kind the result holds.
    top = max([float(np.nanmax(np.asarray(g, dtype=float))) for g in result.scores.values()]
              + [result.corrupted_prob + 1e-6])
    for i, kind in enumerate(kinds):
        grid = np.asarray(result.scores[kind], dtype=float)
        # A first-order estimate can fall below the corrupted baseline; the scale still starts there.
        fig.add_trace(
            go.Heatmap(
                z=grid, x=list(range(grid.shape[1])), y=labels, colorscale=COLORSCALES.get(kind, "Blues"),
                zmin=result.corrupted_prob, zmax=top,
                colorbar=dict(x=(i + 1) / len(kinds) - 0.02, len=0.9, thickness=10,
                              title=dict(text=f"p({result.answer.strip()})", side="right"),
                              **baseline_ticks(result.corrupted_prob, result.clean_prob, top)),
                hovertemplate=("token %{y}<br>layer %{x}<br>p=%{z:.4f} (corrupted "
                               + f"{result.corrupted_prob:.4f})<extra>" + kind + "</extra>"),
            ),
            row=1, col=i + 1,
        )
        fig.update_xaxes(title_text="layer" if kind == "resid" else f"centre of {result.window} restored layers",
                         row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_yaxes(title_text="token (* = subject)", row=1, col=1)
    how = {"trace": "noise on the subject", "attribution": "noise on the subject; first-order preview",
           "patch": "patched from the corrupt prompt"}.get(result.method, result.method)
    fig.update_layout(
        # Two lines: a long prompt on one line ran off a one-panel figure.
        title=(f"{result.prompt} → {result.answer!r}<br>clean p={result.clean_prob:.3f}, "
               f"corrupted p={result.corrupted_prob:.3f} ({how})"),
        height=max(260, 120 + height_per_token * len(labels)), width=max(420, 380 * len(kinds)),
        margin=dict(l=10, r=10, t=80, b=40),
    )
    return fig


def aie_figure(result, *, kinds: Sequence[str] | None = None, groups: Sequence[str] | None = None) -> go.Figure:
    """Average indirect effect per layer, one line per token group with its 95% band.

    Args:
        result: an :class:`~workbench.locate.AIEResult`.
        kinds: panels to draw (default: all in the result).
        groups: token groups to draw (default: all six of ROME's).
    """
    kinds = list(kinds or result.kinds)
    groups = list(groups or result.groups)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[TITLES.get(k, k) for k in kinds], shared_yaxes=True)
    layers = list(range(result.n_layers))
    for i, kind in enumerate(kinds):
        for g in groups:
            color = GROUP_COLORS[result.groups.index(g) % len(GROUP_COLORS)]
            low, high = result.low[kind][g], result.high[kind][g]
            band_ok = all(v is not None for v in low + high)
            if band_ok:
                fig.add_trace(go.Scatter(
                    x=layers + layers[::-1], y=list(high) + list(low)[::-1], fill="toself", fillcolor=color,
                    opacity=0.15, line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=g,
                ), row=1, col=i + 1)
            fig.add_trace(go.Scatter(
                x=layers, y=result.mean[kind][g], mode="lines", line=dict(color=color),
                name=f"{g} (n={result.counts.get(g, 0)})", legendgroup=g, showlegend=i == 0,
            ), row=1, col=i + 1)
        fig.update_xaxes(title_text="layer", row=1, col=i + 1)
    fig.update_yaxes(title_text="average indirect effect on p(answer)", row=1, col=1)
    fig.update_layout(
        title=f"{result.model}: average indirect effect over {result.n_facts} facts "
              f"({result.samples} noise samples, noise {result.noise:g}×std)",
        height=420, width=max(480, 420 * len(kinds)),
    )
    return fig
