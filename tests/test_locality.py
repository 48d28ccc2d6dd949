"""Tracing effect against edit success: the statistics recover known answers on synthetic data,
and a real profile edits at every layer and leaves the model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.evaluation.locality import fact_profile, variance_explained


def _rows(y_of, n_facts=200, n_layers=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_facts):
        trace = rng.normal(size=n_layers)
        for layer in range(n_layers):
            rows.append({"subject": f"s{f}", "case_id": f, "layer": layer, "trace_effect": float(trace[layer]),
                         "trace_peak_layer": int(np.argmax(trace)),
                         "rewrite_score": float(y_of(layer, trace[layer], rng))})
    return rows


def test_a_known_correlation_is_recovered():
    # y = 0.8 t + 0.6 e with t, e standard normal: corr(t, y) = 0.8, R²(trace) = 0.64, no layer effect.
    s = variance_explained(_rows(lambda layer, t, rng: 0.8 * t + 0.6 * rng.normal()))
    assert s["per_fact_correlation"]["mean"] == pytest.approx(0.8, abs=0.03)
    lo, hi = s["per_fact_correlation"]["lo"], s["per_fact_correlation"]["hi"]
    assert lo < 0.8 < hi + 0.02 and hi - lo < 0.1
    assert s["r2_trace"] == pytest.approx(0.64, abs=0.03)
    assert s["r2_layer"] == pytest.approx(0.0, abs=0.02)  # 12 layer means of noise
    assert s["r2_added_by_trace"] == pytest.approx(0.64, abs=0.03)


def test_the_layer_alone_explains_what_the_trace_does_not():
    # Edit success set by the layer (Hase et al.'s finding), the trace unrelated to it.
    s = variance_explained(_rows(lambda layer, t, rng: -0.05 * (layer - 4) ** 2 + 0.1 * rng.normal()))
    assert s["r2_layer"] > 0.9 and abs(s["r2_added_by_trace"]) < 0.01
    assert abs(s["per_fact_correlation"]["mean"]) < 0.05
    assert max(s["mean_by_layer"], key=s["mean_by_layer"].get) == 4
    # The best layer is 4 for nearly every fact, the random trace peaks anywhere: ~1 in 12.
    assert s["best_layer_is_trace_peak"]["mean"] < 0.2
    with pytest.raises(WorkbenchError, match="unknown outcome"):
        variance_explained(s and _rows(lambda *a: 0.0, n_facts=2), outcome="accuracy")
    with pytest.raises(WorkbenchError, match="at least 3"):
        variance_explained([])


def test_profile_edits_every_layer_and_restores_the_model():
    from workbench.figures.evaluation import locality_figure

    model = wb.load_model("tiny-gemma3")
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
                   paraphrase_prompts=("Where is the Eiffel Tower? It is in the city of",))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [0, model.n_layers - 1]
    rows = fact_profile(model, fact, layers=layers, trace_samples=2, steps=3, n_prefixes=1)
    assert [r["layer"] for r in rows] == layers
    for r in rows:
        assert -1.0 <= r["rewrite_score"] <= 1.0 and r["efficacy"] in (0.0, 1.0)
        assert r["paraphrase_rewrite_score"] is not None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len({r["trace_peak_layer"] for r in rows}) == 1
    s = variance_explained(rows * 2)  # R² needs three rows; the same fact twice
    assert s["n_facts"] == 1 and s["layers"] == layers
    fig = locality_figure(s)
    assert len(fig.data) == 2 and "R² layer" in fig.layout.title.text
    with pytest.raises(WorkbenchError, match="out of range"):
        fact_profile(model, fact, layers=[model.n_layers])
