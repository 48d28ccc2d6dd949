"""Figures of evaluation reports: scores per method, sequential degradation curves.

Pure functions of :class:`~workbench.evaluation.EvalReport` /
:class:`~workbench.evaluation.CompareReport`: nothing is computed here. A method has one
colour in every panel of every figure (:func:`~workbench.figures.palette.method_colour`),
and one legend entry per run, shared by its traces in all panels (``legendgroup``).

Example:
    >>> fig = scores_figure(wb.compare(model, facts, methods=["rome", "in-context"]))
    >>> fig.show()   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from workbench.figures.palette import run_styles

#: CounterFact rates shown by default (EasyEdit accuracies are another metric: plot them apart).
COUNTERFACT = {"efficacy_score": "Efficacy", "paraphrase_score": "Paraphrase",
               "neighborhood_score": "Neighbourhood", "implication_score": "Implication", "score": "Score (H-mean)"}
EASYEDIT = {"easyedit_rewrite_acc": "Rewrite acc.", "easyedit_rephrase_acc": "Rephrase acc.",
            "easyedit_locality_acc": "Locality acc."}
#: The critics' measures: each teacher-forced rate beside the one read off generated answers.
CRITICS = {"efficacy_score": "Efficacy (p)", "gen_efficacy": "Efficacy (said)",
           "paraphrase_score": "Paraphrase (p)", "gen_paraphrase": "Paraphrase (said)",
           "gen_question": "Question (said)",
           "neighborhood_score": "Neighbourhood (p)", "gen_neighborhood": "Neighbourhood (said)",
           "neighborhood_plus": "Neighbourhood+ (p)", "gen_neighborhood_plus": "Neighbourhood+ (said)"}
_SETS = {"counterfact": (COUNTERFACT, "CounterFact scores"),
         "easyedit": (EASYEDIT, "EasyEdit teacher-forced token accuracy"),
         "critics": (CRITICS, "Teacher-forced (p) and generated (said) scores")}


def _reports(reports) -> list:
    return list(getattr(reports, "reports", None) or ([reports] if hasattr(reports, "summary") else reports))


def scores_figure(reports, *, metrics: str = "counterfact") -> go.Figure:
    """Grouped bars: one group per score, one bar per method (in %), with 95 % intervals.

    The whiskers are the summary's bootstrap intervals over facts (reports saved
    before intervals existed draw none).

    Args:
        reports: a CompareReport, one EvalReport, or a list of them.
        metrics: ``"counterfact"`` (default), ``"critics"`` (teacher-forced beside
            generated) or ``"easyedit"`` -- EasyEdit's accuracy is never mixed with the others.
    """
    if metrics not in _SETS:
        raise ValueError(f"metrics must be one of {', '.join(_SETS)}, got {metrics!r}")
    names, title = _SETS[metrics]
    fig = go.Figure()
    runs = _reports(reports)
    for r, (colour, dash) in zip(runs, run_styles([r.summary["method"] for r in runs])):
        s = r.summary
        keys = [k for k in names if s.get(k) is not None]
        ivs = s.get("intervals") or {}
        plus = [100 * (ivs[k][1] - s[k]) if k in ivs else 0 for k in keys]
        minus = [100 * (s[k] - ivs[k][0]) if k in ivs else 0 for k in keys]
        name = f"{s['method']} ({s['mode']})"
        # A second run of the same method: its colour, hatched (a bar has no dash).
        pattern = "" if dash == "solid" else "/"
        fig.add_bar(
            name=name, legendgroup=name, x=[names[k] for k in keys], y=[100 * s[k] for k in keys],
            marker=dict(color=colour, pattern=dict(shape=pattern)),
            text=[f"{100 * s[k]:.0f}" for k in keys], textposition="outside",
            error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, visible=bool(ivs)),
        )
    n = ", ".join(f"{r.summary['method']}: n={r.summary['n']}" for r in _reports(reports))
    # Two lines: on one, the figure's default width cut the title off after "whiskers".
    fig.update_layout(barmode="group",
                      title=f"{title} after editing<br><sup>{n}; whiskers: 95 % intervals over the facts</sup>",
                      yaxis_title="%", yaxis_range=[0, 115], legend_title="method")
    return fig


def degradation_figure(reports: Sequence, *, metric: str = "efficacy_score", log_x: bool = True) -> go.Figure:
    """Sequential mode: a score of all edits so far, and perplexity, against the number of edits.

    Every method in one plot, edits on a log axis (1 to 1,000 edits fit; the unedited
    point, 0 edits, is then left off). A run in batches is labelled ``method ×k``. A method
    has its own colour in both panels and one legend entry; a second run of the same
    method in the figure is dashed.

    Args:
        reports: EvalReports from ``mode="sequential"`` (others are skipped).
        metric: the curve's score (``efficacy_score``, ``paraphrase_score``, ...).
        log_x: edits on a log axis (False: linear, with the unedited point).

    Example:
        >>> degradation_figure([wb.evaluate(model, facts, method="grace", mode="sequential")])  # doctest: +SKIP
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(COUNTERFACT.get(metric, metric) + " of edits so far",
                                                        "Held-out perplexity"))
    runs = [r for r in _reports(reports) if r.curve]
    seen: dict[str, int] = {}
    for r, (colour, dash) in zip(runs, run_styles([r.summary["method"] for r in runs])):
        curve = [p for p in r.curve if p.n_edits > 0] if log_x else list(r.curve)
        x = [p.n_edits for p in curve]
        k = (r.settings or {}).get("batch_size") or 1
        label = r.summary["method"] + (f" ×{k}" if k > 1 else "")
        # Two runs of one setting (a short probe beside the long run) keep separate legend entries.
        seen[label] = seen.get(label, 0) + 1
        label += f" ({seen[label]})" if seen[label] > 1 else ""
        # The same colour in both panels, set here: plotly's own cycle gives every trace the next
        # colour, so the perplexity panel's lines did not match the legend.
        style = dict(mode="lines+markers", name=label, legendgroup=label, line=dict(color=colour, dash=dash),
                     marker=dict(color=colour))
        fig.add_scatter(x=x, y=[None if getattr(p, metric) is None else 100 * getattr(p, metric) for p in curve],
                        **style, row=1, col=1)
        fig.add_scatter(x=x, y=[p.perplexity for p in curve], **style, showlegend=False, row=1, col=2)
    fig.update_xaxes(title_text="edits applied", type="log" if log_x else "linear")
    fig.update_yaxes(title_text="%", range=[0, 105], row=1, col=1)
    fig.update_yaxes(title_text="perplexity", type="log", row=1, col=2)
    fig.update_layout(title="Sequential editing: degradation")
    return fig


def locality_figure(summary: dict) -> go.Figure:
    """Edit success by layer, with the mean tracing effect over it (:func:`~workbench.evaluation.locality.variance_explained`).

    Bars: the mean edit success at each layer; line (right axis): the mean normalised
    MLP tracing effect at the last subject token. The title carries the R² figures.

    Example:
        >>> locality_figure(variance_explained(rows)).show()       # doctest: +SKIP
    """
    from plotly.subplots import make_subplots

    layers = [int(l) for l in summary["mean_by_layer"]]
    edit = [100 * v for v in summary["mean_by_layer"].values()]
    trace = list(summary["trace_by_layer"].values())
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=layers, y=edit, name=f"{summary['outcome']} (%)", opacity=0.7)
    fig.add_scatter(x=layers, y=trace, mode="lines+markers", name="tracing effect (MLP, last subject token)",
                    secondary_y=True)
    fig.update_xaxes(title_text="layer edited / traced", dtick=1)
    fig.update_yaxes(title_text=f"mean {summary['outcome']} (%)", secondary_y=False)
    fig.update_yaxes(title_text="tracing effect (0 corrupted, 1 clean)", secondary_y=True)
    fig.update_layout(title=(f"{summary['n_facts']} facts: R² layer {summary['r2_layer']:.2f}, "
                             f"trace {summary['r2_trace']:.2f}, added by trace {summary['r2_added_by_trace']:.3f}"),
                      legend=dict(orientation="h", y=-0.2))
    return fig
