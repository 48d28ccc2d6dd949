"""Shared fixtures: models are loaded once per session and shared.

Tiny models (random weights, real tokenizers) serve the fast unit tests; the
real offline models serve tests marked ``slow``. After every test any edit a
test left applied is reverted, so one test's edit never leaks into the next.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
# Generated texts are not read from a cache that an earlier test (or run) filled: each test sees
# what its own call generates. tests/test_text_cache.py turns it on where it is the subject.
os.environ["WORKBENCH_TEXT_CACHE"] = "0"

_LOADED: dict[str, object] = {}


def _model(name: str):
    if name not in _LOADED:
        import workbench as wb

        _LOADED[name] = wb.load_model(name)
    return _LOADED[name]


@pytest.fixture(scope="session")
def tiny_gemma():
    return _model("tiny-gemma3")


@pytest.fixture(scope="session")
def tiny_llama():
    return _model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_olmo():
    """A family with no entry in architecture.FAMILIES: it runs on the default roles."""
    return _model("tiny-olmo")


@pytest.fixture(scope="session")
def tiny_phi3():
    """Another family on the default roles (its FFN fuses the gate and up projections)."""
    return _model("tiny-phi3")


@pytest.fixture(scope="session")
def gemma():
    return _model("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm():
    return _model("smollm2-135m")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty ``WORKBENCH_CACHE`` for a test about what gets computed and cached -- except the
    converted built-in models, linked from the real cache: converting a GGUF again costs 25 s a
    model and is not what such a test is about (tests/test_reliability.py converts on purpose)."""
    from workbench.runtime.cache import cache_dir

    models = cache_dir("models")
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("WORKBENCH_CACHE", str(root))
    return root


@pytest.fixture(autouse=True)
def _own_trace_cache(tmp_path, monkeypatch):
    """Each test starts with no computed trace kept (one test's trace must not answer another's)."""
    monkeypatch.setenv("WORKBENCH_TRACE_CACHE", str(tmp_path / "traces"))


@pytest.fixture(autouse=True)
def _revert_leftover_edits():
    yield
    from workbench.editing.handle import revert_all

    for model in _LOADED.values():
        revert_all(model)
        model.prompt_edits.clear()
