"""Editors: methods that change what a model says about a fact, reversibly.

:func:`edit` dispatches to a registered method (:mod:`~workbench.editing.registry`).
A method is a function ``(model, facts, *, layers, **hparams) -> EditHandle``
that computes its update and hands it to
:func:`~workbench.editing.handle.commit_weights` (or ``commit_prompt_edit`` for
the no-weight baselines), which applies it atomically and records how to undo it.

What it holds::

    registry     MethodSpec: what each method is, in one record; register_method, method_spec
    handle       EditHandle: apply atomically, revert bitwise, save, load, stack
    search       SearchParams: the target-search settings and each method's defaults
    optimize     prefixes, batches, activation capture and the v* search itself
    stats        FFN key second moments C (cached) and their ridge solves
    defaults     default layers per method and model
    rome, memit, pmet, kn, ft          weight edits
    emmet, alphaedit                   editors built for many edits (batched ROME; MEMIT projected;
                                       alphaedit-paper: as published; memit-kept: MEMIT + earlier keys)
    overlays                           edits inside the forward pass: a hook on one FFN, no weight written
    grace, wise                        codebook at one FFN; side value memory with a router
    wise_paper                         WISE as published: shards of a side memory, Ties merge, routing per input
    incontext, retrieval               baselines that change no weights
    retrieval_chain                    retrieval + the bridge of a nested question answered by the model

What it may import: the model layer (``workbench.core.model``, ``facts``,
``probing``, ``unembed``, ``lowp``, ``corpus``, ``cache``, ``progress``, ``results``,
``errors``), the locator (``workbench.locate``) and itself — never
``evaluation``, ``figures``, ``ui`` or ``cli``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

# The built-in methods register themselves on import (a few milliseconds in all).
from workbench.editing import (  # noqa: F401
    alphaedit, emmet, ft, grace, incontext, kn, memit, pmet, retrieval, retrieval_chain, rome, wise, wise_paper,
)
from workbench.editing.handle import EditHandle, active_edits, load_edit, revert_all, unedited
from workbench.editing.registry import (
    METHODS,
    SPECS,
    MethodSpec,
    import_plugins,
    method_names,
    method_spec,
    register_method,
)
from workbench import checks
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model
from workbench.probing import probe

import_plugins()


def check_facts(facts: Fact | Sequence[Fact]) -> list[Fact]:
    """Validate facts for editing: each has a new object; no subject gets two targets."""
    if isinstance(facts, Fact):
        facts = [facts]
    facts = list(facts)
    if not facts:
        raise WorkbenchError("no facts to edit")
    seen: dict[tuple[str, str], Fact] = {}
    same_true: dict[tuple[str, str], Fact] = {}
    for f in facts:
        if not isinstance(f, Fact):
            raise WorkbenchError(f"expected a Fact, got {type(f).__name__}")
        if f.target_new is None:
            raise WorkbenchError(f"fact about {f.subject!r} has no target_new to edit towards")
        subject = " ".join(f.subject.split()).casefold()
        # The same prompt up to spacing and case asks for two new objects for one fact.
        key = (subject, " ".join(f.prompt.split()).casefold())
        other = seen.setdefault(key, f)
        if other.target_new.strip() != f.target_new.strip():
            raise WorkbenchError(
                f"the batch asks for two different new objects for {f.text!r}: {other.target_new!r} and {f.target_new!r}"
            )
        # The same true object under another wording may be the same fact said twice, or
        # another relation with the same answer: worth a word, not a refusal.
        if f.target_true is not None:
            other = same_true.setdefault((subject, f.target_true.strip().casefold()), f)
            if other.target_new.strip() != f.target_new.strip():
                warnings.warn(
                    f"{other.text!r} -> {other.target_new!r} and {f.text!r} -> {f.target_new!r} replace the same "
                    f"true object {f.target_true!r}: if they are one fact worded twice, the batch contradicts itself",
                    stacklevel=3,
                )
    return facts


#: An edit after which the new object's probability on the edit prompt is below this,
#: for most of its facts, is refused and reverted: it wrote weights without making the
#: model say the new object (lr=1e9 ended at p ≈ 0.006 and was kept before this check).
MIN_PROB = 0.05


def edit(
    model: Model,
    facts: Fact | Sequence[Fact],
    *,
    method: str = "rome",
    layers: Sequence[int] | None = None,
    min_prob: float = MIN_PROB,
    **hparams,
) -> EditHandle:
    """Edit ``facts`` into ``model`` with ``method``; returns a handle that can revert.

    Args:
        model: a loaded Model (shared state: the edit changes its weights).
        facts: one Fact or several (several in one update for batch methods).
        method: one of :data:`METHODS` (``rome``, ``memit``, ``pmet``, ``emmet``,
            ``alphaedit``, ``alphaedit-paper``, ``memit-kept``, ``kn``, ``ft``, ``grace``, ``wise``, ``wise-paper``,
            ``in-context``,
            ``retrieval``, ``retrieval-chain``).
        layers: layers to edit (default: the method's default for this model).
        min_prob: refuse (and revert) the edit unless the new object's probability
            on the edit prompt reaches this for more than half of the facts; 0 keeps
            every edit (what :func:`~workbench.evaluation.evaluate` does, to score them all).
        **hparams: method hyperparameters.

    Example:
        >>> fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
        >>> h = wb.edit(model, fact, method="rome")                      # doctest: +SKIP
        >>> wb.probe(model, fact.text).prompts[0].top[0].token           # doctest: +SKIP
        ' Rome'
        >>> h.revert()                                                    # doctest: +SKIP
    """
    spec = method_spec(method)
    spec.check(hparams)
    facts = check_facts(facts)
    _refuse_offloaded(model)
    for fact in facts:
        checks.prompt_length(len(model.encode(fact.text)), "editing")
    if layers is not None:
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise WorkbenchError(f"layers must be a list of layer numbers, got {layers!r}")
        layers = [model.layer_index(l) for l in layers]
        if not layers:
            raise WorkbenchError("layers is empty: give at least one layer, or None for the method's default")
    min_prob = checks.number("min_prob", min_prob, low=0, high=1)
    handle = spec.fn(model, facts, layers=layers, **hparams)
    if min_prob:
        _refuse_if_weak(model, handle, facts, min_prob)
    return handle


def plan_search(model: Model, fact: Fact, method: str, **kwargs):
    """The v* search ``edit(model, fact, method=method, **kwargs)`` would run on the unedited
    weights, as a :class:`~workbench.editing.targets.SearchRequest`; None when the method
    declares none or the arguments are not valid (the edit itself then says why).

    Example:
        >>> reqs = [plan_search(model, f, "rome") for f in facts]           # doctest: +SKIP
        >>> with prefetched(model, reqs):                                   # doctest: +SKIP
        ...     handles = [edit(model, f, method="rome") for f in facts]  # each takes its search
    """
    spec = method_spec(method)
    if spec.plan_search is None:
        return None
    settings = {k: v for k, v in kwargs.items() if k != "min_prob"}
    try:
        spec.check({k: v for k, v in settings.items() if k != "layers"})
        if settings.get("layers") is not None:
            settings["layers"] = [model.layer_index(l) for l in settings["layers"]]
        return spec.plan_search(model, fact, **settings)
    except (WorkbenchError, TypeError, ValueError):
        return None


def prepare(model: Model, method: str = "rome", *, layers: Sequence[int] | None = None,
            compute_statistics: bool = True) -> float:
    """Pay ``method``'s one-time costs on ``model`` now rather than in its first edit; returns seconds.

    What a method computes on its first edit and keeps (ROME: the factor of its key statistics,
    its context prefixes and the bfloat16 weight copies of its search) is made here; no weight
    changes and later edits give the same numbers. ``compute_statistics=False`` uses key
    statistics only if they are on disk (a corpus pass takes 20 s or more on a CPU). Methods
    with nothing to prepare return at once. The app calls it while it starts.

    Example:
        >>> wb.editing.prepare(model, "rome")                        # doctest: +SKIP
        0.61
    """
    import time

    spec = method_spec(method)
    start = time.perf_counter()
    if spec.prepare is not None:
        spec.prepare(model, layers, compute_statistics=compute_statistics)
    return time.perf_counter() - start


def _refuse_offloaded(model: Model) -> None:
    """An edit writes weights: every weight must be in memory (not offloaded to disk by a device_map)."""
    offloaded = [n for n, p in model.hf_model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise WorkbenchError(
            f"{len(offloaded)} weight(s) of this model are offloaded to disk by its device_map (first: "
            f"{offloaded[0]}): an edit must write them in memory; load it with a device_map that keeps every "
            "weight on a GPU or the CPU (e.g. max_memory with room on 'cpu')"
        )


def _refuse_if_weak(model: Model, handle: EditHandle, facts: list[Fact], min_prob: float) -> None:
    """Revert ``handle`` and raise unless most facts reach p(new) >= ``min_prob``."""
    try:
        result = probe(model, [f.text for f in facts], targets=[[f.target_new] for f in facts], top_k=0)
        probs = [p.targets[0].prob for p in result.prompts]
    except BaseException:
        handle.revert()  # the check itself failed (Ctrl-C, say): no half-judged edit stays
        raise
    reached = sum(p >= min_prob for p in probs)
    if 2 * reached > len(facts):
        return
    handle.revert()
    if len(facts) == 1:
        what = f"p({facts[0].target_new.strip()}) = {probs[0]:.3g} after {facts[0].text!r}"
    else:
        what = f"p(new) >= {min_prob:g} for only {reached} of {len(facts)} facts (mean {sum(probs) / len(probs):.3g})"
    raise WorkbenchError(
        f"the {handle.method} edit reached {what}, below min_prob={min_prob:g}: it was reverted and the "
        "weights are as they were (pass min_prob=0 to keep such an edit)"
    )


__all__ = ["EditHandle", "METHODS", "MethodSpec", "SPECS", "active_edits", "check_facts", "edit", "load_edit",
           "import_plugins", "method_names", "method_spec", "plan_search", "prepare", "register_method", "revert_all", "unedited"]
