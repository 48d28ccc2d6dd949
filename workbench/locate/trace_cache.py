"""Exact traces kept on disk, so a fact traced once (or shipped traced) answers at once.

Two places are read, in order:

- ``assets/traces/<model>.json``: the bundled examples' traces at the app's default
  settings, made by ``scripts/cache_traces.py`` and committed (a class's first
  "Run trace" on a bundled fact needs no computing);
- ``<WORKBENCH_CACHE>/traces/<key>.json`` (or the folder ``WORKBENCH_TRACE_CACHE``):
  every exact trace the app has computed.

A trace is found only for the same weights (the model's fingerprint, and no edit
applied now: :meth:`~workbench.core.model.Model.is_unedited`), the same prompt, subject and
answer, and the same settings (:meth:`TraceSettings.key`). A file that does not parse or
does not match its key is ignored (a user-cache file is removed).
:func:`~workbench.locate.tracing.trace` reads and writes it with ``cache=True``.

Example:
    >>> r = cached_trace(model, fact, TraceSettings(kinds="mlp", samples=3))  # doctest: +SKIP
    >>> r is None or r.scores["mlp"].shape[1] == model.n_layers                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.runtime.cache import cache_dir, write_file_atomically
from workbench.locate.trace_result import TraceResult
from workbench.locate.trace_settings import TraceSettings
from workbench.core.model import Model

log = logging.getLogger(__name__)

#: Where the committed traces lie, one file per model name.
SHIPPED = Path(__file__).resolve().parent.parent.parent / "assets" / "traces"


def user_folder() -> Path:
    """Where computed traces are kept: ``WORKBENCH_TRACE_CACHE``, else the workbench cache's ``traces``."""
    folder = os.environ.get("WORKBENCH_TRACE_CACHE")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return cache_dir("traces")


def trace_key(model: Model, fact, settings: TraceSettings | None = None, *, subject: str | None = None,
              **overrides: Any) -> str:
    """The cache key of an exact trace (:meth:`TraceSettings.key`); settings as an object or keywords.

    Example:
        >>> key = trace_key(model, fact, kinds=["mlp"], samples=3)                 # doctest: +SKIP
        >>> key == trace_key(model, fact, TraceSettings(kinds="mlp", samples=3))  # doctest: +SKIP
        True
    """
    return TraceSettings.of(settings, **overrides).key(model, fact, subject)


def _shipped(model: Model) -> dict:
    path = SHIPPED / f"{model.name}.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("trace file %s is unreadable (%s); ignored", path, exc)
        return {}
    if data.get("fingerprint") != model.fingerprint:
        return {}  # other weights under the same name: none of these traces are theirs
    return data.get("traces", {})


def _checked(entry, key: str, kinds: Sequence[str]) -> TraceResult | None:
    """The stored result if it is whole and of this key; else None."""
    try:
        if entry.get("key") != key:
            return None
        result = TraceResult.from_dict(entry["result"])
        if sorted(result.scores) != sorted(kinds):
            return None
        return result
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def cached_trace(model: Model, fact, settings: TraceSettings | None = None, *, subject: str | None = None,
                 **overrides: Any) -> TraceResult | None:
    """The exact trace :func:`~workbench.locate.trace` would return, if one is on disk; else None.

    None whenever an edit is applied (the weights are not the fingerprinted ones).

    Example:
        >>> cached_trace(model, fact, TraceSettings(kinds="mlp", samples=3))  # doctest: +SKIP
    """
    if not model.is_unedited():
        return None
    settings = TraceSettings.of(settings, **overrides)
    key = settings.key(model, fact, subject)
    shipped = _shipped(model)
    found = _checked(shipped[key], key, settings.kinds) if key in shipped else None
    if found is not None:
        return found
    path = user_folder() / f"{key}.json"
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        entry = None
    found = _checked(entry, key, settings.kinds) if isinstance(entry, dict) else None
    if found is None:
        log.warning("trace cache file %s is corrupt; removed (it is computed again)", path)
        path.unlink(missing_ok=True)
    return found


def store_trace(model: Model, fact, result: TraceResult, settings: TraceSettings | None = None, *,
                subject: str | None = None, **overrides: Any) -> Path | None:
    """Keep an exact trace in the user cache (not when an edit is applied, nor a preview).

    Example:
        >>> store_trace(model, fact, trace(model, fact, settings), settings)  # doctest: +SKIP
    """
    if result.method != "trace" or not model.is_unedited():
        return None
    key = TraceSettings.of(settings, **overrides).key(model, fact, subject)
    path = user_folder() / f"{key}.json"
    write_file_atomically(path, json.dumps({"key": key, "result": _stored(result)}).encode())
    return path


def entry(model: Model, fact, result: TraceResult, settings: TraceSettings | None = None,
          **overrides: Any) -> tuple[str, dict]:
    """``(key, entry)`` for the committed file (``scripts/cache_traces.py``)."""
    key = trace_key(model, fact, settings, **overrides)
    return key, {"key": key, "result": _stored(result)}


def _stored(result: TraceResult) -> dict:
    d = result.to_dict()
    d.pop("indirect_effects", None)  # derived: scores minus the corrupted probability
    return d
