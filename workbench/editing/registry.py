"""The editing methods by name: :data:`METHODS`, and :func:`register_method` that fills it.

A method module registers itself when imported (``workbench.editing`` imports
the built-in ones); :func:`workbench.editing.edit` looks the name up here.
"""

from __future__ import annotations

from collections.abc import Callable

#: method name -> function(model, facts, *, layers, **hparams) -> EditHandle
METHODS: dict[str, Callable] = {}
#: methods that take ``check_known=False`` to skip their own "does the model know this?" probe
CHECKS_KNOWN: set[str] = set()


def register_method(name: str, *, checks_known: bool = False):
    """Decorator adding an editing method to :data:`METHODS`.

    ``checks_known``: the method warns about facts the model does not know and
    takes ``check_known=False`` to skip that probe (``evaluate`` passes it after
    filtering the facts itself).

    Example:
        >>> @register_method("my-method")                              # doctest: +SKIP
        ... def my_method(model, facts, *, layers=None): ...
    """

    def wrap(fn):
        METHODS[name] = fn
        if checks_known:
            CHECKS_KNOWN.add(name)
        return fn

    return wrap
