"""Figures for the FFN-memory locators: pure functions from results to plotly figures.

Example:
    >>> fig = sub_update_bars(wb.memories(model, "The Eiffel Tower is in", layer=10))
    >>> fig.show()
"""

from __future__ import annotations

import plotly.graph_objects as go

from workbench.locate.lens import LensResult, TokenScore
from workbench.locate.memories import MemoryReport
from workbench.locate.neurons import NeuronReport


def readable(token: str) -> bool:
    """Whether a token reads as a word piece: letters or digits, no control or missing glyphs.

    Example:
        >>> readable(" Paris"), readable("\\u200b"), readable("<unused12>")
        (True, False, False)
    """
    text = token.strip()
    return (bool(text) and text.isprintable() and not (text.startswith("<") and text.endswith(">"))
            and any(c.isalnum() for c in text) and "\ufffd" not in text)


def shown_tokens(scores: list[TokenScore], n: int, *, only_readable: bool = False) -> list[TokenScore]:
    """The first ``n`` tokens of a list, the unreadable ones skipped when asked (table and chart alike)."""
    return [t for t in scores if readable(t.token)][:n] if only_readable else list(scores)[:n]


def _label(tokens: list[TokenScore], n: int = 3, *, only_readable: bool = False) -> str:
    return ", ".join(repr(t.token) for t in shown_tokens(tokens, n, only_readable=only_readable))


#: Per sort key: the bar length's axis title and the title's words for the order.
_AXES = {"weight": ("|m_i| · ||v_i||", "by weight |m|·||v||"),
         "answer_push": ("direct push on the logit of {answer}", "by push on {answer}")}


def sub_update_bars(report: MemoryReport, *, by: str = "weight", only_readable: bool = False,
                    tokens: int = 3) -> go.Figure:
    """Horizontal bars of the listed sub-updates, one row per key, in the order of
    ``report.ranked(by)`` from the top (the order a table of them shows).

    A bar's length is the sort key (``weight`` ``|m_i| ||v_i||``, or ``answer_push``);
    its row is labelled with the key and the tokens the signed sub-update promotes
    (``only_readable`` skips the unreadable ones, as the panel's table does); colour
    shows the sign of ``m_i``. The row labels widen the left margin as they need
    (``automargin``) and the height grows with the rows, so no label is cut off.

    Example:
        >>> fig = sub_update_bars(report, by="answer_push", only_readable=True)
        >>> [row.split(":")[0] for row in fig.data[0].y][:2]   # doctest: +SKIP
        ['key 1723', 'key 88']
    """
    updates = report.ranked(by)
    answer = repr(report.answer) if report.answer else "the answer"
    axis, order = (text.format(answer=answer) for text in _AXES[by])
    fig = go.Figure(go.Bar(
        x=[getattr(u, by) for u in updates],
        y=[f"key {u.key}: {_label(u.promotes, tokens, only_readable=only_readable)}" for u in updates],
        orientation="h",
        marker_color=["#1f77b4" if u.coefficient >= 0 else "#d62728" for u in updates],
        customdata=[[u.key, u.coefficient, u.value_norm, u.weight, u.answer_push,
                     _label(u.demotes, tokens, only_readable=only_readable)] for u in updates],
        hovertemplate="%{y}<br>|m|·||v|| = %{customdata[3]:.3f}, push on " + answer
                      + " = %{customdata[4]:+.3f}<br>m = %{customdata[1]:.3f}, ||v|| = %{customdata[2]:.3f}"
                      "<br>demotes %{customdata[5]}<extra></extra>",
    ))
    fig.update_layout(
        # Two short lines: one long line ran past a notebook-wide figure.
        title=dict(text=f"FFN sub-updates, layer {report.layer}, token {report.token!r} "
                        f"({report.top_weight_share:.0%} of total weight)<br>sorted {order}; "
                        "blue m>0, red m<0", font_size=13),
        xaxis_title=axis,
        # The first row on top, as in the table; every category shown, labels never cut.
        yaxis=dict(type="category", autorange="reversed", automargin=True, tickfont_size=11, dtick=1),
        height=max(300, 22 * len(updates) + 170), margin=dict(l=10, r=30, t=80, b=60),
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
