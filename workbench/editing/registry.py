"""The editing methods by name: :data:`METHODS`, and :func:`register_method` that fills it.

A method module registers itself when imported (``workbench.editing`` imports
the built-in ones), declaring the ranges of its own settings; :func:`check_hparams`
checks what a caller passes against them once, in :func:`workbench.editing.edit`,
before anything is computed. The target-search settings of ROME, MEMIT and PMET
are checked by :class:`~workbench.editing.search.SearchParams` itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from workbench.errors import WorkbenchError

#: method name -> function(model, facts, *, layers, **hparams) -> EditHandle
METHODS: dict[str, Callable] = {}
#: methods that take ``check_known=False`` to skip their own "does the model know this?" probe
CHECKS_KNOWN: set[str] = set()
#: methods whose updates read the FFN keys' second moments (workbench.editing.stats)
KEY_STATISTICS: set[str] = set()
#: method name -> {setting: check(name, value)} (see workbench.checks.Whole, Number, ...)
LIMITS: dict[str, dict[str, Callable[[str, Any], Any]]] = {}
#: method name -> prepare(model, layers, *, compute_statistics) paying its one-time costs (see
#: :func:`workbench.editing.prepare`)
PREPARE: dict[str, Callable[..., None]] = {}


def register_method(name: str, *, checks_known: bool = False, key_statistics: bool = False,
                    limits: Mapping[str, Callable[[str, Any], Any]] | None = None,
                    prepare: Callable[..., None] | None = None):
    """Decorator adding an editing method to :data:`METHODS`.

    ``checks_known``: the method warns about facts the model does not know and
    takes ``check_known=False`` to skip that probe (``evaluate`` passes it after
    filtering the facts itself). ``key_statistics``: the method reads C of the
    layers it edits (``samples`` corpus tokens), so a parallel run computes them
    once before its workers start. ``limits``: each setting's check, applied to
    the values a caller gives. ``prepare``: ``prepare(model, layers, *, compute_statistics)``
    makes now what the method's first edit on a model would make once and keep (factors of
    C, bfloat16 weight copies), without changing any result.

    Example:
        >>> from workbench.checks import Number
        >>> @register_method("my-method", limits={"factor": Number(0, 1)})  # doctest: +SKIP
        ... def my_method(model, facts, *, layers=None, factor=0.9): ...
    """

    def wrap(fn):
        METHODS[name] = fn
        if checks_known:
            CHECKS_KNOWN.add(name)
        if key_statistics:
            KEY_STATISTICS.add(name)
        LIMITS[name] = dict(limits or {})
        if prepare is not None:
            PREPARE[name] = prepare
        return fn

    return wrap


def check_hparams(method: str, hparams: Mapping[str, Any]) -> None:
    """Refuse a setting ``method`` does not take, or a value outside its declared range.

    Methods that take ``**search`` (ROME, MEMIT, PMET) pass unknown names on to
    :class:`~workbench.editing.search.SearchParams`, which names what it takes.

    Raises:
        WorkbenchError: one line naming the setting and what it must be.
    """
    params = inspect.signature(METHODS[method]).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        own = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "layers"]
        unknown = sorted(set(hparams) - set(own))
        if unknown:
            raise WorkbenchError(
                f"unknown hyperparameter(s) for {method}: {', '.join(unknown)} "
                f"({method} takes {', '.join(own) if own else 'none'})"
            )
    for name, check in LIMITS.get(method, {}).items():
        if name in hparams:
            check(name, hparams[name])
