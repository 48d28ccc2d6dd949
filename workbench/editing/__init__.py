"""Editors: methods that change what a model says about a fact, reversibly.

:func:`edit` dispatches to a registered method (:mod:`~workbench.editing.registry`).
A method is a function ``(model, facts, *, layers, **hparams) -> EditHandle``
that computes its update and hands it to
:func:`~workbench.editing.handle.commit_weights` (or ``commit_prompt_edit`` for
the no-weight baselines), which applies it atomically and records how to undo it.

What it holds::

    registry     METHODS by name, register_method
    handle       EditHandle: apply atomically, revert bitwise, save, load, stack
    search       SearchParams: the target-search settings and each method's defaults
    optimize     prefixes, batches, activation capture and the v* search itself
    stats        FFN key second moments C (cached) and their ridge solves
    defaults     default layers per method and model
    lowp         the v* search's bfloat16 blocks
    rome, memit, pmet, kn, ft          weight edits
    incontext, retrieval               baselines that change no weights

What it may import: the model layer (``workbench.model``, ``facts``,
``probing``, ``unembed``, ``corpus``, ``cache``, ``progress``, ``results``,
``errors``), the locator (``workbench.locate``) and itself — never
``evaluation``, ``figures``, ``ui`` or ``cli``.
"""

from __future__ import annotations

from collections.abc import Sequence

# The built-in methods register themselves on import (a few milliseconds in all).
from workbench.editing import ft, incontext, kn, memit, pmet, retrieval, rome  # noqa: F401
from workbench.editing.handle import EditHandle, active_edits, load_edit, revert_all
from workbench.editing.registry import CHECKS_KNOWN, METHODS, register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact


def check_facts(facts: Fact | Sequence[Fact]) -> list[Fact]:
    """Validate facts for editing: each has a new object; no subject gets two targets."""
    if isinstance(facts, Fact):
        facts = [facts]
    facts = list(facts)
    if not facts:
        raise WorkbenchError("no facts to edit")
    seen: dict[tuple[str, str], str] = {}
    for f in facts:
        if not isinstance(f, Fact):
            raise WorkbenchError(f"expected a Fact, got {type(f).__name__}")
        if f.target_new is None:
            raise WorkbenchError(f"fact about {f.subject!r} has no target_new to edit towards")
        key = (f.subject, f.prompt)
        if key in seen and seen[key] != f.target_new:
            raise WorkbenchError(
                f"the batch asks for two different new objects for {f.text!r}: {seen[key]!r} and {f.target_new!r}"
            )
        seen[key] = f.target_new
    return facts


def edit(model, facts: Fact | Sequence[Fact], *, method: str = "rome", layers: Sequence[int] | None = None, **hparams) -> EditHandle:
    """Edit ``facts`` into ``model`` with ``method``; returns a handle that can revert.

    Args:
        model: a loaded Model (shared state: the edit changes its weights).
        facts: one Fact or several (several in one update for batch methods).
        method: one of :data:`METHODS` (``rome``, ``memit``, ``pmet``, ``kn``,
            ``ft``, ``in-context``, ``retrieval``).
        layers: layers to edit (default: the method's default for this model).
        **hparams: method hyperparameters.

    Example:
        >>> fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
        >>> h = wb.edit(model, fact, method="rome")                      # doctest: +SKIP
        >>> wb.probe(model, fact.text).prompts[0].top[0].token           # doctest: +SKIP
        ' Rome'
        >>> h.revert()                                                    # doctest: +SKIP
    """
    if method not in METHODS:
        raise WorkbenchError(f"unknown editing method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    facts = check_facts(facts)
    if layers is not None:
        layers = [model.layer_index(int(l)) for l in layers]
    return METHODS[method](model, facts, layers=layers, **hparams)


__all__ = ["CHECKS_KNOWN", "EditHandle", "METHODS", "active_edits", "check_facts", "edit", "load_edit", "register_method", "revert_all"]
