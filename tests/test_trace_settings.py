"""TraceSettings: the defaults once, the same checks and messages as before, a stable cache key,
and the same numbers whether a trace is given keywords or a settings object."""

from __future__ import annotations

import re

import numpy as np
import pytest

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.locate import TraceSettings
from workbench.locate.reference import trace_reference
from workbench.locate.trace_settings import resolve_precision
from workbench.locate.tracing import TRACE_ALGORITHMS

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


def test_defaults_and_normalised_fields():
    s = TraceSettings()
    assert (s.kinds, s.samples, s.noise, s.noise_std, s.window, s.seed, s.answer, s.precision) == \
        (("resid", "mlp", "attn"), 10, 3.0, None, 10, 0, None, "auto")
    assert TraceSettings(kinds="all") == s
    assert TraceSettings(kinds=["mlp", "mlp", "attn"]).kinds == ("mlp", "attn")  # order kept, repeats gone
    assert isinstance(TraceSettings(noise=2).noise, float)
    assert TraceSettings.of(None, samples=3) == TraceSettings(samples=3)
    assert TraceSettings.of(TraceSettings(samples=3), seed=1) == TraceSettings(samples=3, seed=1)
    with pytest.raises(Exception):  # frozen
        s.samples = 3  # type: ignore[misc]
    assert TRACE_ALGORITHMS == ("exact", "attribution")


@pytest.mark.parametrize("kwargs, message", [
    ({"samples": 0}, "samples must be a whole number >= 1, got 0"),
    ({"samples": 2.5}, "samples must be a whole number >= 1, got 2.5"),
    ({"window": 0}, "window must be a whole number of layers >= 1, got 0"),
    ({"noise": -1.0}, "noise must be a finite number >= 0, got -1.0"),
    ({"noise": float("nan")}, "noise must be a finite number >= 0, got nan"),
    ({"kinds": "mlps"}, "unknown kind 'mlps'; choose from resid, mlp, attn or 'all'"),
    ({"kinds": []}, "unknown kind None; choose from resid, mlp, attn or 'all'"),
    ({"precision": "half"}, "unknown precision 'half'; choose from auto, float32, bfloat16"),
])
def test_bad_settings_are_refused_with_the_messages_of_before(kwargs, message):
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        TraceSettings(**kwargs)
    with pytest.raises(WorkbenchError, match=re.escape(message)):
        TraceSettings.of(TraceSettings(), **kwargs)  # a replaced field is checked too


def test_the_key_is_stable_and_tells_settings_apart(tiny_gemma):
    base = TraceSettings(kinds=["mlp", "attn"], samples=2)
    key = base.key(tiny_gemma, FACT)
    assert re.fullmatch(r"[0-9a-f]{24}", key)
    assert key == TraceSettings(kinds=("attn", "mlp"), samples=2).key(tiny_gemma, FACT)  # kinds in any order
    assert key == TraceSettings(kinds=("attn", "mlp"), samples=2, noise=3).key(tiny_gemma, FACT)  # 3 == 3.0
    assert key == base.key(tiny_gemma, ("The {} is located in the city of", "Eiffel Tower"))  # fact or pair
    # "auto" is keyed by what it resolves to here: the arithmetic the trace would use.
    resolved = resolve_precision(tiny_gemma, "auto")
    assert key == TraceSettings.of(base, precision=resolved).key(tiny_gemma, FACT)
    others = [TraceSettings.of(base, **change).key(tiny_gemma, FACT) for change in (
        {"kinds": "mlp"}, {"samples": 3}, {"noise": 2.0}, {"window": 4}, {"seed": 1}, {"answer": "Rome"},
        {"noise_std": 0.5}, {"precision": "float32" if resolved == "bfloat16" else "bfloat16"},
    )]
    others.append(base.key(tiny_gemma, wb.Fact("Louvre", "The {} is located in the city of", "Paris")))
    assert key not in others and len(set(others)) == len(others)


def test_the_key_is_the_trace_cache_key_of_before(tiny_gemma):
    """The committed traces (assets/traces) are found by key: the key's recipe must not change."""
    import hashlib
    import json

    what = {"fingerprint": tiny_gemma.fingerprint, "prompt": FACT.text, "subject": FACT.subject, "answer": None,
            "kinds": ["mlp"], "samples": 3, "noise": 3.0, "window": 10, "seed": 0,
            "precision": resolve_precision(tiny_gemma, "auto")}
    before = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
    assert TraceSettings(kinds=["mlp"], samples=3).key(tiny_gemma, FACT) == before


def test_keywords_and_a_settings_object_give_the_same_numbers(tiny_gemma):
    by_keywords = wb.trace(tiny_gemma, FACT, kinds="all", samples=2, window=3, precision="float32")
    settings = TraceSettings(kinds="all", samples=2, window=3, precision="float32")
    by_object = wb.trace(tiny_gemma, FACT, settings=settings)
    mixed = wb.trace(tiny_gemma, FACT, settings=TraceSettings(kinds="all", samples=5), samples=2, window=3,
                     precision="float32")
    for r in (by_object, mixed):
        assert list(r.scores) == list(by_keywords.scores) == ["resid", "mlp", "attn"]
        for kind in r.scores:
            np.testing.assert_array_equal(r.scores[kind], by_keywords.scores[kind])
        assert (r.samples, r.window, r.noise, r.seed, r.precision) == (2, 3, 3.0, 0, "float32")
    ref = trace_reference(tiny_gemma, FACT, settings=settings, cells=[(len(by_object.tokens) - 1, 0)])
    np.testing.assert_allclose(ref["mlp"][-1, 0], by_object.scores["mlp"][-1, 0], rtol=1e-5)
    preview = wb.trace(tiny_gemma, FACT, settings=settings, method="attribution")
    again = wb.trace(tiny_gemma, FACT, kinds="all", samples=2, window=3, method="attribution")
    np.testing.assert_array_equal(preview.scores["mlp"], again.scores["mlp"])
    with pytest.raises(TypeError):
        wb.trace(tiny_gemma, FACT, sample=2)  # a misspelt setting is not ignored


def test_the_trace_panel_reads_its_widgets_into_settings(tiny_gemma):
    pytest.importorskip("ipywidgets")
    from workbench.ui.trace import DEFAULT_SAMPLES, TracePanel
    from workbench.ui.state import State

    panel = TracePanel(State(tiny_gemma), background=False)
    assert panel.settings() == TraceSettings(kinds="mlp", samples=DEFAULT_SAMPLES)
    panel.kinds.value = ("mlp", "resid")
    panel.window.value = 4
    assert panel.settings(answer="Rome") == TraceSettings(kinds=("mlp", "resid"), samples=DEFAULT_SAMPLES,
                                                          window=4, answer="Rome")


def test_auto_precision_follows_the_measured_bfloat16_bound(tiny_gemma, monkeypatch, tmp_path):
    """'auto' takes bfloat16 only on a CPU that does it natively and where the committed
    measurement for the model is within the bound; the default model's is not (1.5e-2)."""
    import json

    import workbench.runtime.lowp
    from workbench.locate import trace_settings as ts

    monkeypatch.setattr(workbench.runtime.lowp, "usable", lambda model: True)
    measured = tmp_path / "bf16.json"
    monkeypatch.setattr(ts, "BF16_MEASURED", measured)
    assert ts.resolve_precision(tiny_gemma, "auto") == "float32"  # never measured
    for error, want in ((5e-4, "bfloat16"), (1.46e-2, "float32")):
        measured.write_text(json.dumps({"models": {tiny_gemma.name: {"max_abs_difference": error}}}))
        assert ts.resolve_precision(tiny_gemma, "auto") == want
    monkeypatch.setattr(workbench.runtime.lowp, "usable", lambda model: False)
    assert ts.resolve_precision(tiny_gemma, "auto") == "float32"
    assert ts.resolve_precision(tiny_gemma, "bfloat16") == "bfloat16"  # asked for by name: given
    monkeypatch.undo()
    committed = json.loads(ts.BF16_MEASURED.read_text())["models"]["gemma-3-270m"]["max_abs_difference"]
    assert committed > ts.BF16_BOUND
