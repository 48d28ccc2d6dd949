"""Figures for the FFN-memory locators: pure functions from results to plotly figures.

Example:
    >>> fig = sub_update_bars(wb.memories(model, "The Eiffel Tower is in", layer=10))
    >>> fig.show()
"""

from __future__ import annotations

import plotly.graph_objects as go

from workbench.locate.lens import LensResult
from workbench.locate.memories import MemoryReport
from workbench.locate.neurons import NeuronReport


def _label(tokens, n: int = 3) -> str:
    return ", ".join(repr(t.token) for t in tokens[:n])


def sub_update_bars(report: MemoryReport, *, tokens: int = 3) -> go.Figure:
    """Horizontal bars of the listed sub-updates' weights ``|m_i| ||v_i||``, labelled
    with the tokens each signed sub-update promotes; colour shows the sign of ``m_i``."""
    updates = list(reversed(report.sub_updates))  # largest on top
    fig = go.Figure(go.Bar(
        x=[u.weight for u in updates],
        y=[f"key {u.key}" for u in updates],
        orientation="h",
        marker_color=["#1f77b4" if u.coefficient >= 0 else "#d62728" for u in updates],
        text=[_label(u.promotes, tokens) for u in updates],
        textposition="outside",
        customdata=[[u.coefficient, u.value_norm, _label(u.demotes, tokens)] for u in updates],
        hovertemplate="%{y}<br>|m|·||v|| = %{x:.3f}<br>m = %{customdata[0]:.3f}, ||v|| = %{customdata[1]:.3f}"
                      "<br>promotes %{text}<br>demotes %{customdata[2]}<extra></extra>",
    ))
    fig.update_layout(
        title=f"FFN sub-updates, layer {report.layer}, token {report.token!r} "
              f"({report.top_weight_share:.0%} of total weight; blue m>0, red m<0)",
        xaxis_title="|m_i| · ||v_i||", height=max(300, 24 * len(updates) + 120), margin=dict(l=90, r=220),
    )
    return fig


def lens_heatmap(result: LensResult) -> go.Figure:
    """Layer × position heatmap: colour is the top token's probability (or the watched
    token's, when one is watched), cell text the top token."""
    watched = result.watch is not None
    z = result.watch_prob if watched else [[pos[0].score for pos in layer] for layer in result.top]
    text = [[pos[0].token for pos in layer] for layer in result.top]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(result.tokens))), y=list(range(result.n_layers)),
        text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
        colorbar_title=f"p({result.watch!r})" if watched else "p(top)",
        hovertemplate="layer %{y}, position %{x}<br>top %{text}<br>p = %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title="Logit lens" + (f": p({result.watch!r})" if watched else ""),
        xaxis=dict(tickmode="array", tickvals=list(range(len(result.tokens))), ticktext=result.tokens,
                   title="token"),
        yaxis_title="layer (residual after block)", height=max(350, 22 * result.n_layers + 150),
    )
    return fig


def neuron_attributions(report: NeuronReport, *, n: int = 30) -> go.Figure:
    """Bars of the largest mean attributions (shared knowledge neurons filled, others
    outlined), with a second panel of each layer's total attribution."""
    from plotly.subplots import make_subplots

    top = report.top[:n]
    shared = {(x.layer, x.key) for x in report.neurons}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3],
                        subplot_titles=("largest attributions", "total per layer"))
    fig.add_trace(go.Bar(
        x=[f"L{x.layer}/{x.key}" for x in top], y=[x.attribution for x in top],
        marker_color=["#2ca02c" if (x.layer, x.key) in shared else "#c7c7c7" for x in top],
        hovertemplate="%{x}<br>attribution %{y:.4g}<extra></extra>", name="neurons",
    ), row=1, col=1)
    fig.add_trace(go.Bar(x=report.layers, y=report.layer_totals, marker_color="#1f77b4", name="layers",
                         hovertemplate="layer %{x}<br>sum %{y:.4g}<extra></extra>"), row=1, col=2)
    title = f"Knowledge neurons for {report.target!r} ({len(report.neurons)} shared, green)"
    if report.effect is not None:
        e = report.effect
        # On a second line: in one line the title ran past a notebook-wide figure.
        title += f"<br>p: {e.before:.3f} → suppressed {e.suppressed:.3f}, amplified {e.amplified:.3f}"
    fig.update_layout(title=dict(text=title, font_size=13), showlegend=False, height=440,
                      margin=dict(t=90))
    fig.update_xaxes(title_text="layer/key", row=1, col=1)
    fig.update_xaxes(title_text="layer", row=1, col=2)
    return fig
