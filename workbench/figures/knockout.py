"""Figures of the second half of recall: attention knockout curves and the subject's attribute rate.

Pure functions of :class:`~workbench.locate.knockout.KnockoutResult` and
:class:`~workbench.locate.enrichment.EnrichmentResult`: nothing is computed here.

Example:
    >>> fig = knockout_figure(wb.knockout(model, fact))
    >>> fig.show()   # doctest: +SKIP
"""

from __future__ import annotations

import plotly.graph_objects as go

from workbench.locate.enrichment import EnrichmentResult
from workbench.locate.knockout import KnockoutResult

#: The paper's colours: the subject's edges stand out, the others recede.
GROUP_COLORS = {"subject": "#d62728", "other": "#1f77b4", "last": "#2ca02c"}
GROUP_NAMES = {"subject": "subject → last", "other": "non-subject → last", "last": "last → last"}
_SPARE_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def knockout_figure(result: KnockoutResult, *, title: str | None = None) -> go.Figure:
    """One line per edge group over the window's centre layer: the change in p(answer), in %.

    Example:
        >>> knockout_figure(r).data[0].name
        'subject → last'
    """
    fig = go.Figure()
    spare = iter(_SPARE_COLORS * 4)
    for group, changes in result.changes.items():
        positions = result.positions.get(group, [])
        where = ", ".join(repr(result.tokens[p]) for p in positions) or "none"
        fig.add_trace(go.Scatter(
            x=result.layers, y=[None if c is None else 100 * c for c in changes], mode="lines+markers",
            name=GROUP_NAMES.get(group, group), line_color=GROUP_COLORS.get(group) or next(spare),
            customdata=[[lo, hi - 1, p] for (lo, hi), p in zip(result.windows, result.probs[group])],
            hovertemplate=(f"blocked from {where}<br>layers %{{customdata[0]}}–%{{customdata[1]}}"
                           "<br>p = %{customdata[2]:.4f}<br>change %{y:.1f}%<extra></extra>"),
        ))
    return _axes(fig, title or (f"Attention knockout into the last token: p({result.answer.strip()!r}) = "
                                f"{result.clean_prob:.3f} unblocked; window {result.window}"), height=380)


def knockout_comparison_figure(before: KnockoutResult, now: KnockoutResult, *,
                               title: str | None = None) -> go.Figure:
    """Before an edit and now, overlaid: one colour per edge group, the unedited model dashed.

    ``before`` is usually the unedited model towards the true object, ``now`` the edited
    model towards the new one; where the two subject curves part is where the edit is read.

    Example:
        >>> [t.name for t in knockout_comparison_figure(before, now).data][:2]   # doctest: +SKIP
        ['subject → last: before', 'subject → last: now']
    """
    fig = go.Figure()
    spare = iter(_SPARE_COLORS * 4)
    for group in dict.fromkeys(list(before.changes) + list(now.changes)):
        color = GROUP_COLORS.get(group) or next(spare)
        for label, result, dash in (("before", before, "dash"), ("now", now, "solid")):
            if group not in result.changes:
                continue
            fig.add_trace(go.Scatter(
                x=result.layers, y=[None if c is None else 100 * c for c in result.changes[group]],
                mode="lines+markers", name=f"{GROUP_NAMES.get(group, group)}: {label}",
                line=dict(color=color, dash=dash), marker_symbol="circle-open" if dash == "dash" else "circle",
                customdata=[[lo, hi - 1, p] for (lo, hi), p in zip(result.windows, result.probs[group])],
                hovertemplate=(f"{label}: p({result.answer.strip()!r})<br>layers %{{customdata[0]}}–%{{customdata[1]}}"
                               "<br>p = %{customdata[2]:.4f}<br>change %{y:.1f}%<extra></extra>"),
            ))
    return _axes(fig, title or (f"Knockout before the edit, p({before.answer.strip()!r}) = {before.clean_prob:.3f} "
                                f"(dashed), and now, p({now.answer.strip()!r}) = {now.clean_prob:.3f} (solid); "
                                f"window {now.window}"), height=420)


def knockout_study_figure(summary: dict, *, window: int | str = 1, marks: dict[str, int] | None = None,
                          title: str | None = None) -> go.Figure:
    """The knockout study over many facts: each edge group's mean change per layer, 95 % band.

    ``summary`` is a study summary as ``benchmarks/knockout_study.py`` writes it
    (``summary["study"]`` of ``assets/results/knockout_study.json``): per window size, per
    group, ``per_layer`` rows of ``mean``, ``lo``, ``hi``. ``marks`` draws labelled vertical
    lines (e.g. ``{"tracing peak": 4, "ROME's layer": 4}``).

    Example:
        >>> study = json.loads(Path("assets/results/knockout_study.json").read_text())["summary"]["study"]  # doctest: +SKIP
        >>> knockout_study_figure(study, window=1).data[0].name                                          # doctest: +SKIP
        'subject → last'
    """
    entry = summary[str(window)]
    fig = go.Figure()
    spare = iter(_SPARE_COLORS * 4)
    for group, values in entry["groups"].items():
        rows = values["per_layer"]
        color = GROUP_COLORS.get(group) or next(spare)
        layers = [r["layer"] for r in rows]
        # The band first (upper edge, then the lower edge filled up to it), the mean over it.
        fig.add_trace(go.Scatter(x=layers, y=[100 * r["hi"] for r in rows], mode="lines", line_width=0,
                                 showlegend=False, hoverinfo="skip", legendgroup=group))
        fig.add_trace(go.Scatter(x=layers, y=[100 * r["lo"] for r in rows], mode="lines", line_width=0,
                                 fill="tonexty", fillcolor=_translucent(color), showlegend=False,
                                 hoverinfo="skip", legendgroup=group))
        fig.add_trace(go.Scatter(
            x=layers, y=[100 * r["mean"] for r in rows], mode="lines+markers", line_color=color,
            name=GROUP_NAMES.get(group, group), legendgroup=group,
            customdata=[[100 * r["lo"], 100 * r["hi"]] for r in rows],
            hovertemplate="layer %{x}: %{y:.1f}% [%{customdata[0]:.1f}, %{customdata[1]:.1f}]<extra></extra>"))
    for label, layer in (marks or {}).items():
        fig.add_vline(x=layer, line_dash="dot", line_color="#555", annotation_text=label,
                      annotation_position="top")
    return _axes(fig, title or (f"Knockout over {entry['n']} facts (window {window}): mean change in p(answer), "
                                "95 % interval"), height=400)


def _translucent(color: str, alpha: float = 0.18) -> str:
    """``#rrggbb`` as an ``rgba`` string with ``alpha`` (a band behind its line)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def enrichment_figure(result: EnrichmentResult, *, title: str | None = None) -> go.Figure:
    """The attribute rate of the subject's last token over layers, with each layer's hits on hover.

    Example:
        >>> enrichment_figure(e).data[0].y[:3]   # doctest: +SKIP
        (0.0, 0.02, 0.04)
    """
    token = result.tokens[result.position]
    hover = [", ".join(repr(t) for t in h) or "none" for h in result.hits]
    tops = [", ".join(repr(t) for t in row[:8]) for row in result.top]
    fig = go.Figure(go.Scatter(
        x=result.layers, y=[100 * r for r in result.rate], mode="lines+markers", name="attribute rate",
        line_color="#9467bd", customdata=list(zip(hover, tops)),
        hovertemplate="layer %{x}: %{y:.0f}%<br>attributes: %{customdata[0]}<br>top: %{customdata[1]}<extra></extra>",
    ))
    fig.update_layout(
        title=title or f"Subject enrichment at {token!r}: attributes among the top {result.top_k} tokens",
        xaxis_title="layer (residual after block)", yaxis_title="attribute rate", yaxis_ticksuffix="%",
        yaxis_rangemode="tozero", height=320,
    )
    return fig


def _axes(fig, title: str, *, height: int):
    """The knockout figures' shared frame: a zero line, the layer axis and the % change axis."""
    fig.add_hline(y=0, line_color="#999", line_width=1)
    fig.update_layout(title=title, xaxis_title="layer (centre of the blocked window)",
                      yaxis_title="% change in p(answer)", yaxis_ticksuffix="%", height=height,
                      legend=dict(orientation="h", y=-0.25))
    return fig
