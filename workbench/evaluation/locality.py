"""Does the causal-trace peak say where to edit? Tracing effect against edit success, per fact and layer.

Hase et al. (2023, "Does localization inform editing?") traced each fact, edited it
with ROME at every layer, and asked how much of the variance in edit success the
tracing effect explains once the layer is known. Their answer on GPT-J: almost none
-- the layer matters, the trace does not. This module measures the same thing on
the workbench's models:

* :func:`fact_profile` -- one fact: the MLP tracing effect at the last subject token
  at every layer (normalised: 0 = the corrupted run, 1 = the clean run), and a ROME
  edit at every layer, each scored and reverted (rewrite score, efficacy, paraphrase);
* :func:`variance_explained` -- over many facts: R² of edit success on the layer
  alone (a mean per layer), on the tracing effect alone, and on both; the increase
  that the tracing effect adds to the layer; and the per-fact correlation between
  the tracing curve and the edit-success curve, with a 95 % bootstrap interval.

``benchmarks/tracing_vs_editing.py`` runs it (resumable, with a time limit) and
draws :func:`workbench.figures.evaluation.locality_figure`.

Example:
    >>> rows = fact_profile(model, fact, layers=range(model.n_layers))    # doctest: +SKIP
    >>> variance_explained(rows)["r2_layer"]                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from workbench.errors import WorkbenchError
from workbench.evaluation import intervals
from workbench.evaluation.intervals import mean_of
from workbench.facts import Fact
from workbench.core.model import Model

#: What :func:`variance_explained` can explain: a per-(fact, layer) column of the rows.
OUTCOMES = ("rewrite_score", "efficacy_magnitude", "paraphrase_rewrite_score", "efficacy", "paraphrase")


def tracing_curve(model: Model, fact: Fact, *, samples: int = 3, window: int = 10, seed: int = 0) -> dict:
    """The MLP causal-trace effect at the last subject token, per layer, normalised.

    Returns ``{"effect": [...], "raw": [...], "clean_prob", "corrupted_prob", "peak_layer"}``;
    ``effect[l] = (p_restored - p_corrupted) / (p_clean - p_corrupted)``.
    """
    from workbench.locate import trace

    r = trace(model, fact, kinds="mlp", samples=samples, window=window, seed=seed)
    last = r.subject_range[1] - 1
    raw = np.asarray(r.scores["mlp"][last], dtype=np.float64)
    span = r.clean_prob - r.corrupted_prob
    effect = (raw - r.corrupted_prob) / span if abs(span) > 1e-12 else np.zeros_like(raw)
    return {"effect": effect.tolist(), "raw": raw.tolist(), "clean_prob": float(r.clean_prob),
            "corrupted_prob": float(r.corrupted_prob), "peak_layer": int(np.argmax(raw))}


def fact_profile(model: Model, fact: Fact, *, layers: Iterable[int], method: str | None = None, trace_samples: int = 3,
                 window: int = 10, cancel=None, **edit_kwargs) -> list[dict]:
    """One row per layer: the fact's tracing effect there and a ``method`` edit at that layer, scored.

    Each edit is reverted before the next (the model is as it was when this returns,
    also after an error). ``trace_samples``: the trace's noise samples; ``edit_kwargs`` go
    to :func:`~workbench.editing.edit` (ROME's ``steps``, its statistics' ``samples``, ...).
    ``rewrite_score`` is Hase et al.'s
    ``(p_new after - p_new before) / (1 - p_new before)`` on the edit prompt;
    ``paraphrase_rewrite_score`` the same averaged over the paraphrases. ``method``: default the
    registry's first (ROME, the method Hase et al. studied).
    """
    from workbench.editing import edit, method_names
    from workbench.evaluation.scores import score_fact

    method = method or method_names()[0]
    layers = list(layers)
    if not layers:
        raise WorkbenchError("give at least one layer to edit at")
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad:
        raise WorkbenchError(f"layer(s) {bad} out of range: {model.name} has layers 0-{model.n_layers - 1}")
    curve = tracing_curve(model, fact, samples=trace_samples, window=window)
    before = score_fact(model, fact, metrics=("teacher",))
    p0 = _new_probs(before)
    rows = []
    for layer in layers:
        if cancel is not None:
            cancel.check()
        h = edit(model, fact, method=method, layers=[layer], min_prob=0.0, check_known=False, **edit_kwargs)
        try:
            after = score_fact(model, fact, metrics=("teacher",))
        finally:
            h.revert()
        p1 = _new_probs(after)
        rows.append({
            "subject": fact.subject, "case_id": fact.case_id, "layer": layer,
            "trace_effect": curve["effect"][layer], "trace_raw": curve["raw"][layer],
            "trace_peak_layer": curve["peak_layer"],
            "rewrite_score": _rewrite(p0["rewrite"][0], p1["rewrite"][0]),
            "paraphrase_rewrite_score": mean_of([_rewrite(a, b) for a, b in zip(p0["paraphrase"], p1["paraphrase"])]),
            "efficacy": after.efficacy, "efficacy_magnitude": after.efficacy_magnitude,
            "paraphrase": after.paraphrase, "neighborhood": after.neighborhood,
        })
    return rows


def _new_probs(scores) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"rewrite": [], "paraphrase": []}
    for p in scores.prompts:
        if p.kind in out:
            out[p.kind].append(p.p_new)
    return out


def _rewrite(before: float, after: float) -> float:
    return (after - before) / (1.0 - before) if before < 1.0 else 0.0


def _r2(y: np.ndarray, X: np.ndarray) -> float:
    """R² of the least-squares fit of ``y`` on the columns of ``X`` (which include the intercept)."""
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float((resid ** 2).sum()) / total if total > 0 else 0.0


def variance_explained(rows: Sequence[dict], *, outcome: str = "rewrite_score", effect: str = "trace_effect") -> dict:
    """How much of the variance in ``outcome`` the layer and the tracing effect explain.

    ``rows``: one dict per (fact, layer) with ``subject``, ``layer``, ``outcome`` and
    ``effect`` (:func:`fact_profile`'s rows). Returns the R² of ``outcome`` on the
    layer alone (one mean per layer), on the tracing effect alone (a line), on both,
    ``r2_added_by_trace`` (both minus layer alone), the per-fact Pearson
    correlation of the two curves over layers (mean with its interval; facts whose
    curves are constant are skipped), and how often the layer that edits best is the
    trace's peak layer.

    Example:
        >>> variance_explained(rows)["r2_added_by_trace"]      # doctest: +SKIP
        0.01
    """
    if outcome not in OUTCOMES:
        raise WorkbenchError(f"unknown outcome {outcome!r}; choose from {', '.join(OUTCOMES)}")
    rows = [r for r in rows if r.get(outcome) is not None and r.get(effect) is not None]
    if len(rows) < 3:
        raise WorkbenchError(f"need at least 3 (fact, layer) rows with {outcome} and {effect}, got {len(rows)}")
    y = np.array([r[outcome] for r in rows], dtype=np.float64)
    t = np.array([r[effect] for r in rows], dtype=np.float64)
    layers = sorted({r["layer"] for r in rows})
    onehot = np.array([[r["layer"] == l for l in layers] for r in rows], dtype=np.float64)
    ones = np.ones((len(rows), 1))
    r2_layer = _r2(y, onehot)  # the one-hot columns span the intercept
    r2_trace = _r2(y, np.hstack([ones, t[:, None]]))
    r2_both = _r2(y, np.hstack([onehot, t[:, None]]))
    by_fact: dict = {}
    for r in rows:
        by_fact.setdefault((r["subject"], r.get("case_id")), []).append(r)
    corrs, best_is_peak = [], []
    for fact_rows in by_fact.values():
        fy = np.array([r[outcome] for r in fact_rows])
        ft = np.array([r[effect] for r in fact_rows])
        if len(fact_rows) >= 3 and fy.std() > 0 and ft.std() > 0:
            corrs.append(float(np.corrcoef(ft, fy)[0, 1]))
        if "trace_peak_layer" in fact_rows[0] and len(fact_rows) == len(layers):
            best = fact_rows[int(np.argmax(fy))]["layer"]
            best_is_peak.append(float(best == fact_rows[0]["trace_peak_layer"]))
    corr = intervals.bootstrap(corrs)
    peak = intervals.bootstrap(best_is_peak)
    return {
        "outcome": outcome, "effect": effect, "n_rows": len(rows), "n_facts": len(by_fact), "layers": layers,
        "r2_layer": r2_layer, "r2_trace": r2_trace, "r2_layer_and_trace": r2_both,
        "r2_added_by_trace": r2_both - r2_layer,
        "per_fact_correlation": None if corr is None else corr.to_dict(),
        "best_layer_is_trace_peak": None if peak is None else peak.to_dict(),
        "mean_by_layer": {l: float(np.mean([r[outcome] for r in rows if r["layer"] == l])) for l in layers},
        "trace_by_layer": {l: float(np.mean([r[effect] for r in rows if r["layer"] == l])) for l in layers},
    }
