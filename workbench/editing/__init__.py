"""Editors: methods that change what a model says about a fact, reversibly.

:func:`edit` dispatches to a registered method. A method is a function
``(model, facts, *, layers, **hparams) -> EditHandle`` that computes its
update and hands it to :func:`~workbench.editing.handle.commit_weights`
(or ``commit_prompt_edit`` for the no-weight baselines), which applies it
atomically and records how to undo it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workbench.editing.handle import EditHandle, active_edits, load_edit, revert_all
from workbench.errors import WorkbenchError
from workbench.facts import Fact

#: method name -> function(model, facts, *, layers, **hparams) -> EditHandle
METHODS: dict[str, Callable[..., EditHandle]] = {}
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


def _load_methods() -> None:
    # Imported lazily so that `import workbench` stays quick and a method's
    # optional dependency (e.g. the retrieval encoder) is only needed when used.
    import importlib

    for module in ("rome", "memit", "pmet", "kn", "ft", "incontext", "retrieval"):
        try:
            importlib.import_module(f"workbench.editing.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"workbench.editing.{module}":
                raise


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
    _load_methods()
    if method not in METHODS:
        raise WorkbenchError(f"unknown editing method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    facts = check_facts(facts)
    if layers is not None:
        layers = [model.layer_index(int(l)) for l in layers]
    return METHODS[method](model, facts, layers=layers, **hparams)


__all__ = ["CHECKS_KNOWN", "EditHandle", "METHODS", "active_edits", "check_facts", "edit", "load_edit", "register_method", "revert_all"]
