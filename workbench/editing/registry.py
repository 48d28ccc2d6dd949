"""What an editing method *is*, in one record: :class:`MethodSpec`, filled by :func:`register_method`.

A method module registers itself when imported (``workbench.editing`` imports the
built-in ones). Its record says everything the rest of the workbench needs to know
about it — the function, a summary and a description for the app, the ranges of its
settings, its layer rule, whether it writes weights, its flags, its one-time setup,
its place in the Edit panel and whether Compare picks it by default — so that the UI,
the CLI, the evaluator and the docs read the record and never name a method.

Example:
    >>> from workbench.editing.registry import method_spec
    >>> method_spec("rome").writes_weights
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.core.model import Model

#: How a method changes the model, for the app's notes: weights written, a hook that
#: answers some prompts inside the forward pass, or text put before the prompt.
KINDS = ("weights", "overlay", "prompt")


@dataclass(frozen=True)
class MethodSpec:
    """One editing method, declared once.

    Attributes:
        name: the name ``wb.edit(..., method=name)`` takes.
        fn: ``fn(model, facts, *, layers, **settings) -> EditHandle``.
        summary: one line (CLI help, docs tables).
        description: a few sentences for the Edit panel.
        kind: ``"weights"`` (writes weights), ``"overlay"`` (a hook inside the forward pass
            answers some prompts; no weight written) or ``"prompt"`` (text before the prompt).
        layers: ``layers(model) -> [layer, ...]``, the layers edited by default; None for a
            method that edits no layer (then the panel's layer field is off).
        limits: setting name -> ``check(name, value)`` (see :mod:`workbench.checks`).
        search: the method passes unknown settings on to
            :class:`~workbench.editing.search.SearchParams` (its target search).
        search_defaults: the search settings where this method differs from the shared defaults.
        checks_known: the method warns about facts the model does not know and takes
            ``check_known=False`` to skip that probe.
        key_statistics: the method reads the FFN keys' second moments of the layers it edits.
        statistics: which ones, where not the default: ``{"samples": n, "include_bos": True}``.
        prepare: ``prepare(model, layers, *, compute_statistics)``, the one-time costs of a
            first edit paid ahead (see :func:`workbench.editing.prepare`).
        order: its place in the Edit panel (lower first; ties by name).
        compare_default: Compare in the app picks it before the user chooses.
        holds: for an overlay, what holds the edits ("a codebook"), for the app's note.
        plan_search: ``plan_search(model, fact, *, layers, **settings) -> SearchRequest``, the v*
            search an edit of that fact alone would run on the unedited weights (see
            :func:`workbench.editing.plan_search`); None for a method without one.
    """

    name: str
    fn: Callable
    summary: str = ""
    description: str = ""
    kind: str = "weights"
    layers: Callable[[Model], list[int]] | None = None
    limits: Mapping[str, Callable[[str, Any], Any]] = field(default_factory=dict)
    search: bool = False
    search_defaults: Mapping[str, Any] = field(default_factory=dict)
    checks_known: bool = False
    key_statistics: bool = False
    statistics: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[..., None] | None = None
    order: int = 1000
    compare_default: bool = False
    holds: str = ""
    plan_search: Callable[..., Any] | None = None

    @property
    def writes_weights(self) -> bool:
        return self.kind == "weights"

    @property
    def edits_layers(self) -> bool:
        return self.layers is not None

    @property
    def takes_cancel(self) -> bool:
        return "cancel" in inspect.signature(self.fn).parameters

    def default_layers(self, model: Model) -> list[int] | None:
        """The layers this method edits on ``model`` when none are given (None: it edits none)."""
        return None if self.layers is None else [int(l) for l in self.layers(model)]

    def settings(self) -> dict[str, Any]:
        """Every setting a caller may pass (besides ``layers`` and ``cancel``) with its default.

        Example:
            >>> method_spec("rome").settings()["n_prefixes"]
            5
        """
        skip = {"model", "facts", "layers", "cancel"}
        own = {name: p.default for name, p in inspect.signature(self.fn).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip
               and p.default is not inspect.Parameter.empty}
        if self.search:
            from workbench.editing.search import SearchParams

            own.update(SearchParams.for_method(self.name).to_dict())
        return own

    def check(self, settings: Mapping[str, Any]) -> None:
        """Refuse a setting this method does not take, or a value outside its declared range.

        Raises:
            WorkbenchError: one line naming the setting and what it must be.
        """
        params = inspect.signature(self.fn).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            own = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "layers"]
            unknown = sorted(set(settings) - set(own))
            if unknown:
                raise WorkbenchError(
                    f"unknown hyperparameter(s) for {self.name}: {', '.join(unknown)} "
                    f"({self.name} takes {', '.join(own) if own else 'none'})"
                )
        for name, check in self.limits.items():
            if name in settings:
                check(name, settings[name])


#: method name -> its record, in registration order.
SPECS: dict[str, MethodSpec] = {}
#: method name -> function(model, facts, *, layers, **hparams) -> EditHandle (the records' ``fn``).
METHODS: dict[str, Callable] = {}


def register_method(name: str, *, summary: str = "", description: str = "", kind: str = "weights",
                    layers: Callable[[Model], list[int]] | None = None,
                    limits: Mapping[str, Callable[[str, Any], Any]] | None = None, search: bool = False,
                    search_defaults: Mapping[str, Any] | None = None,
                    checks_known: bool = False, key_statistics: bool = False,
                    statistics: Mapping[str, Any] | None = None,
                    prepare: Callable[..., None] | None = None, order: int = 1000,
                    compare_default: bool = False, holds: str = "",
                    plan_search: Callable[..., Any] | None = None):
    """Decorator declaring an editing method (see :class:`MethodSpec` for each field).

    Example:
        >>> from workbench.checks import Number
        >>> @register_method("my-method", summary="scales one FFN row",
        ...                  layers=lambda model: [model.n_layers // 2],
        ...                  limits={"factor": Number(0, 1)})  # doctest: +SKIP
        ... def my_method(model, facts, *, layers=None, factor=0.9): ...
    """
    if kind not in KINDS:
        raise WorkbenchError(f"method kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def wrap(fn):
        SPECS[name] = MethodSpec(name=name, fn=fn, summary=summary, description=description or summary,
                                 kind=kind, layers=layers, limits=dict(limits or {}), search=search,
                                 search_defaults=dict(search_defaults or {}),
                                 checks_known=checks_known, key_statistics=key_statistics,
                                 statistics=dict(statistics or {}), prepare=prepare,
                                 order=order, compare_default=compare_default, holds=holds,
                                 plan_search=plan_search)
        METHODS[name] = fn
        from workbench.editing import search as _search  # below the registry: no cycle

        _search._RECORDED[name] = dict(search_defaults or {})
        return fn

    return wrap


def unregister_method(name: str) -> None:
    """Remove a method registered earlier (tests that register toy methods clean up with it)."""
    SPECS.pop(name, None)
    METHODS.pop(name, None)
    from workbench.editing import search as _search

    _search._RECORDED.pop(name, None)


def method_spec(name: str) -> MethodSpec:
    """The record of method ``name``.

    Raises:
        WorkbenchError: no such method, naming the ones there are.
    """
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise WorkbenchError(f"unknown editing method {name!r}; choose one of {', '.join(sorted(SPECS))}") from None


def method_names() -> list[str]:
    """Every registered method, in the Edit panel's order (then by name)."""
    return sorted(SPECS, key=lambda n: (SPECS[n].order, n))


#: The environment variable naming modules (comma-separated) that register methods of their own.
PLUGINS_VARIABLE = "WORKBENCH_METHODS"


def import_plugins() -> list[str]:
    """Import the modules named in ``$WORKBENCH_METHODS``, so that their methods register
    (the app's kernel and the CLI then offer them like the built-in ones); returns their names.

    Example:
        >>> os.environ["WORKBENCH_METHODS"] = "my_lab.editors"          # doctest: +SKIP
        >>> import_plugins()                                              # doctest: +SKIP
        ['my_lab.editors']

    Raises:
        WorkbenchError: a named module cannot be imported (which one, and why).
    """
    import importlib
    import os

    names = [n.strip() for n in os.environ.get(PLUGINS_VARIABLE, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure inside someone else's module
            raise WorkbenchError(f"{PLUGINS_VARIABLE} names {name!r}, which could not be imported: "
                                 f"{type(exc).__name__}: {exc}") from None
    return names


def check_hparams(method: str, hparams: Mapping[str, Any]) -> None:
    """``method_spec(method).check(hparams)``: refuse an unknown setting or a value out of range."""
    method_spec(method).check(hparams)
