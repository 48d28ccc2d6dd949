"""Exact traces kept on disk: found only for the same weights and settings, never after an
edit, a corrupt file ignored; the committed traces are what trace() computes now."""

from __future__ import annotations

import json

import numpy as np
import pytest

import workbench as wb
from workbench.locate import TraceSettings, trace_cache
from workbench.locate.trace_cache import cached_trace, store_trace, trace_key

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
SETTINGS = dict(kinds=["mlp"], samples=2, window=4)


def test_a_stored_trace_is_found_for_the_same_settings_only(tiny_gemma):
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is None
    result = wb.trace(tiny_gemma, FACT, **SETTINGS)
    store_trace(tiny_gemma, FACT, result, **SETTINGS)
    found = cached_trace(tiny_gemma, FACT, **SETTINGS)
    assert found is not None and found.method == "trace"
    np.testing.assert_array_equal(found.scores["mlp"], result.scores["mlp"])
    assert found.tokens == result.tokens and found.corrupted_prob == result.corrupted_prob
    assert cached_trace(tiny_gemma, FACT, **{**SETTINGS, "samples": 3}) is None
    assert cached_trace(tiny_gemma, FACT, **{**SETTINGS, "kinds": ["mlp", "attn"]}) is None
    assert cached_trace(tiny_gemma, wb.Fact("Louvre", "The {} is located in the city of", "Paris"), **SETTINGS) is None
    assert cached_trace(tiny_gemma, FACT, answer="Rome", **SETTINGS) is None
    # The same key whatever the order of the kinds.
    assert trace_key(tiny_gemma, FACT, kinds=["mlp", "attn"], samples=2) == \
        trace_key(tiny_gemma, FACT, kinds=("attn", "mlp"), samples=2)


def test_no_cached_trace_while_an_edit_is_applied(tiny_gemma):
    result = wb.trace(tiny_gemma, FACT, **SETTINGS)
    store_trace(tiny_gemma, FACT, result, **SETTINGS)
    h = wb.edit(tiny_gemma, FACT, method="rome", layers=[1], steps=2, samples=500, check_known=False, min_prob=0.0)
    try:
        assert cached_trace(tiny_gemma, FACT, **SETTINGS) is None
        assert store_trace(tiny_gemma, FACT, result, **SETTINGS) is None  # edited weights are not kept
    finally:
        h.revert()
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is not None


def test_a_corrupt_cache_file_is_ignored_and_removed(tiny_gemma):
    result = wb.trace(tiny_gemma, FACT, **SETTINGS)
    path = store_trace(tiny_gemma, FACT, result, **SETTINGS)
    path.write_text(path.read_text()[:100])  # cut off mid-write
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is None
    assert not path.exists()
    path.write_text(json.dumps({"key": "another", "result": {}}))
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is None


def test_committed_traces_of_other_weights_are_not_used(tiny_gemma, tmp_path, monkeypatch):
    result = wb.trace(tiny_gemma, FACT, **SETTINGS)
    key, entry = trace_cache.entry(tiny_gemma, FACT, result, **SETTINGS)
    monkeypatch.setattr(trace_cache, "SHIPPED", tmp_path)
    shipped = tmp_path / f"{tiny_gemma.name}.json"
    shipped.write_text(json.dumps({"fingerprint": tiny_gemma.fingerprint, "traces": {key: entry}}))
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is not None
    shipped.write_text(json.dumps({"fingerprint": "0" * 16, "traces": {key: entry}}))
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is None
    shipped.write_text("{not json")
    assert cached_trace(tiny_gemma, FACT, **SETTINGS) is None


def test_the_trace_panel_answers_a_repeated_trace_from_the_cache(tiny_gemma):
    pytest.importorskip("ipywidgets")
    from workbench.ui import Workbench

    app = Workbench(tiny_gemma, fact=FACT, facts=[FACT], background=False, answers=False)
    app.trace.samples.value, app.trace.window.value = 2, 4
    app.trace.task.button.click()
    assert "done in" in app.trace.task.status.value
    first = app.state.trace
    app.trace.task.button.click()
    assert "from the trace cache" in app.trace.task.status.value
    np.testing.assert_array_equal(app.state.trace.scores["mlp"], first.scores["mlp"])
    assert app.trace.figures.children  # drawn, and clickable as before
    app.trace.select(2, 1)
    assert "Selected token 2" in app.trace.selection.value


@pytest.fixture
def sweeps(monkeypatch):
    """How many exact traces were computed (not read from the cache), counted at the sweep."""
    from workbench.locate import tracing

    count = {"n": 0}
    real = tracing.sweep

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(tracing, "sweep", counting)
    return count


def _cli_trace(capsys, *extra: str) -> dict:
    from workbench.cli import main

    assert main(["trace", "--model", "tiny-gemma3", "--subject", FACT.subject, "--prompt", FACT.prompt,
                 "--kind", "mlp", "--samples", "2", "--window", "4", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_trace_and_the_cli_share_the_cache_on_unedited_weights(tiny_gemma, sweeps, capsys):
    settings = TraceSettings(**SETTINGS)
    first = wb.trace(tiny_gemma, FACT, settings=settings, cache=True)
    assert sweeps["n"] == 1 and len(list(trace_cache.user_folder().glob("*.json"))) == 1
    again = wb.trace(tiny_gemma, FACT, cache=True, **SETTINGS)  # keywords: the same settings, the same key
    assert sweeps["n"] == 1
    np.testing.assert_array_equal(again.scores["mlp"], first.scores["mlp"])
    out = _cli_trace(capsys)  # the CLI loads its own copy of the same weights
    assert sweeps["n"] == 1 and out["method"] == "trace"
    np.testing.assert_array_equal(np.asarray(out["scores"]["mlp"]), first.scores["mlp"])
    assert out["seconds"] == first.seconds  # the kept trace, not a new one
    _cli_trace(capsys, "--no-cache")
    assert sweeps["n"] == 2
    wb.trace(tiny_gemma, FACT, settings=settings)  # the library's default: computed, nothing read or kept
    assert sweeps["n"] == 3 and len(list(trace_cache.user_folder().glob("*.json"))) == 1
    wb.trace(tiny_gemma, FACT, settings=settings, method="attribution", cache=True)  # a preview is never kept
    assert len(list(trace_cache.user_folder().glob("*.json"))) == 1


def test_trace_and_the_cli_never_use_the_cache_on_edited_weights(tiny_gemma, sweeps, capsys, monkeypatch):
    import workbench.core.model

    settings = TraceSettings(**SETTINGS)
    wb.trace(tiny_gemma, FACT, settings=settings, cache=True)
    kept = sorted(trace_cache.user_folder().glob("*.json"))
    assert tiny_gemma.is_unedited() and sweeps["n"] == 1 and len(kept) == 1
    h = wb.edit(tiny_gemma, FACT, method="rome", layers=[1], steps=2, samples=500, check_known=False, min_prob=0.0)
    try:
        assert not tiny_gemma.is_unedited()
        edited = wb.trace(tiny_gemma, FACT, settings=settings, cache=True)
        assert sweeps["n"] == 2  # computed on the edited weights, not read
        monkeypatch.setattr(workbench.core.model, "load_model", lambda name=None, **kw: tiny_gemma)  # the CLI gets it
        out = _cli_trace(capsys)
        assert sweeps["n"] == 3
        np.testing.assert_array_equal(np.asarray(out["scores"]["mlp"]), edited.scores["mlp"])
        assert sorted(trace_cache.user_folder().glob("*.json")) == kept  # nothing kept either
    finally:
        h.revert()
    assert tiny_gemma.is_unedited()
    wb.trace(tiny_gemma, FACT, settings=settings, cache=True)
    assert sweeps["n"] == 3  # the weights are back: the kept trace answers again


@pytest.mark.slow
def test_committed_traces_are_what_trace_computes_now(gemma):
    """The first committed example (the app's default settings) against a fresh exact trace."""
    from workbench.ui.fact import EXAMPLES
    from workbench.ui.trace import DEFAULT_SAMPLES

    settings = dict(kinds=["mlp"], samples=DEFAULT_SAMPLES, noise=3.0, window=10)
    found = cached_trace(gemma, EXAMPLES[0], **settings)
    assert found is not None, "assets/traces has no trace of the Eiffel example: run scripts/cache_traces.py"
    fresh = wb.trace(gemma, EXAMPLES[0], **settings)
    # Made on one thread; another thread count sums in another order (seen: 6e-4 at most).
    np.testing.assert_allclose(found.scores["mlp"], fresh.scores["mlp"], atol=2e-3)
    assert found.answer == fresh.answer
