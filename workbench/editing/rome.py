"""ROME: a rank-one update of one layer's FFN output matrix (Meng et al. 2022).

For a fact (s, r, o → o*) at layer l:

1. k* = the FFN key at the last subject token, averaged over the edit prompt
   and the same prompt after 20 short generated prefixes.
2. v* = W k* + δ, where δ, added to the FFN output (``ffn_out``, i.e. *before*
   Gemma's post-FFN norm) at the last subject token, makes the model say o*
   (see :func:`~workbench.editing.optimize.optimize_deltas`).
3. W ← W + δ uᵀ / (uᵀ k*) with u = C⁻¹ k*, C = E[k kᵀ] over natural text.

Then W_new k* = W k* + δ = v* exactly, and a key k moves by δ·(uᵀk)/(uᵀk*):
keys unlike k* (in the C⁻¹ metric) barely move. The same averaged k* is used
in u and in the denominator; mixing the bare-prompt key into one of them is what
makes the "disabling" edits of the original code blow up.

Why ``ffn_out`` and not the residual, for Gemma: the block adds
``post_norm(W k)``, so any change of W k is a change of what the FFN adds,
and δ optimised at ``ffn_out`` is realised *exactly* by the weight change —
the post-norm then acts on the edited output as it did on the original one.

Several facts are edited one after another inside one handle; each later fact
sees the earlier updates (through hooks, the weights stay untouched until commit).

Example:
    >>> fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    >>> h = wb.edit(model, fact, method="rome")                  # doctest: +SKIP
    >>> h.info["layer"], h.info["facts"][0]["prob"] > 0.5         # doctest: +SKIP
    (4, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.editing.defaults import rome_layers, single_layer
from workbench.editing.handle import EditHandle, commit_weights
from workbench.editing.optimize import (
    as_matrix,
    build_batch,
    capture,
    context_prefixes,
    prepare_search,
    to_stored,
    value_param,
    virtual_update_hooks,
    warn_if_unknown,
)
from workbench.checks import Number, Whole, check_flag
from workbench.editing.registry import register_method
from workbench.editing.targets import SearchRequest, optimize_deltas
from workbench.editing.search import SearchParams
from workbench.editing.stats import DEFAULT_SAMPLES, is_cached, ridge_solver, with_ridge
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model


def rank_one_update(
    C: Float[Tensor, "d_mlp d_mlp"] | None, k: Float[Tensor, " d_mlp"], delta: Float[Tensor, " d_model"], *,
    reg: float = 1e-4, solve: Callable[[Tensor], Tensor] | None = None,
) -> Float[Tensor, "d_model d_mlp"]:
    """ΔW = δ uᵀ / (uᵀ k) with u = (C + reg·mean(diag C)·I)⁻¹ k, in float64.

    ``(W + ΔW) k = W k + δ`` holds exactly whatever C is; C only decides which
    other keys the edit also moves. The small ridge keeps C⁻¹ finite when some
    key direction never occurs in the corpus. ``solve`` (from
    :func:`~workbench.editing.stats.ridge_solver`) replaces C and reg with a
    cached factorisation of the same matrix.

    Example:
        >>> C = torch.eye(4, dtype=torch.float64); k = torch.ones(4, dtype=torch.float64)
        >>> dW = rank_one_update(C, k, torch.tensor([1.0, 0.0], dtype=torch.float64))
        >>> (dW @ k).tolist()
        [1.0, 0.0]
    """
    if solve is None and C is None:
        raise WorkbenchError("rank_one_update needs C or solve")
    k = k.double()
    if solve is not None:
        u = solve(k)
    else:
        u = torch.linalg.solve(with_ridge(C, reg), k)
    denom = float(u @ k)
    if not denom > 0:
        raise WorkbenchError("the key has no weight under C⁻¹ (uᵀk ≤ 0); cannot place a rank-one edit")
    return torch.outer(delta.double(), u) / denom


@dataclass(frozen=True)
class LayerSite:
    """What an edit of one layer's FFN output matrix reads (ROME, EMMET): C's ridge solver,
    the prefixes of the v* search and of k*, the weight, and the key and output hooks."""

    solve: Callable[[Tensor], Tensor]
    prefixes: list
    key_prefixes: list
    name: str
    param: Tensor
    keys_hook: str
    out_hook: str


def layer_site(model: Model, layer: int, *, samples: int, reg: float, n_prefixes: int, n_key_prefixes: int,
               info: dict, include_bos: bool = False) -> LayerSite:
    """The :class:`LayerSite` of ``layer``; ``info["stats_seconds"]`` gets the time C took."""
    t0 = time.perf_counter()
    solve = ridge_solver(model, layer, samples=samples, reg=reg, include_bos=include_bos)
    info["stats_seconds"] = time.perf_counter() - t0
    name, param = value_param(model, layer)
    return LayerSite(solve, context_prefixes(model, n_prefixes), context_prefixes(model, n_key_prefixes), name, param,
                     model.roles.hook("ffn_keys", layer), model.roles.hook("ffn_out", layer))


#: Prefixes k* is averaged over by default (ROME's papers use about 20).
N_KEY_PREFIXES = 20
#: The declared ranges of ROME's own settings (EMMET takes the same).
ROME_LIMITS = {"samples": Whole(1), "n_key_prefixes": Whole(0, 100), "reg": Number(0, strict=True)}


def prepare_rome(model: Model, layers: Sequence[int] | None = None, *, compute_statistics: bool = True,
                 samples: int = DEFAULT_SAMPLES, reg: float = 1e-4) -> None:
    """What ROME's first edit at ``layers`` (its default) computes once and keeps: the Cholesky
    factor of C + ridge, the context prefixes and the search's bfloat16 weight copies. With
    ``compute_statistics=False`` a C that is not on disk is left for the edit to compute."""
    layer = single_layer(model, layers, "rome", hint="")
    if compute_statistics or is_cached(model, layer, samples=samples):
        ridge_solver(model, layer, samples=samples, reg=reg)
    params = SearchParams.from_kwargs({}, method="rome")
    context_prefixes(model, params.n_prefixes)
    context_prefixes(model, N_KEY_PREFIXES)
    prepare_search(model, [model.roles.hook("ffn_out", layer)], params)


def plan_rome_search(model: Model, fact: Fact, *, layers: Sequence[int] | None = None, samples: int = DEFAULT_SAMPLES,
                     n_key_prefixes: int = N_KEY_PREFIXES, reg: float = 1e-4, check_known: bool = True,
                     stats_bos: bool = False, **search) -> SearchRequest:
    """The v* search a ROME (or EMMET) edit of ``fact`` alone runs on the unedited weights, so that
    independent evaluation can make a chunk's searches in one batch (:func:`~workbench.editing.targets.prefetched`)."""
    params = SearchParams.from_kwargs(search, method="rome")
    layer = single_layer(model, layers, "rome", hint="")
    return SearchRequest(fact, (model.roles.hook("ffn_out", layer),),
                         tuple(context_prefixes(model, params.n_prefixes)), params)


@register_method(
    "rome", order=0, compare_default=True, layers=rome_layers, limits={**ROME_LIMITS, "stats_bos": check_flag},
    search=True,
    # Less momentum overshoots less and meets stop_nll sooner; 5 prefixes cost less than 10 for
    # the same rates within noise (docs/results.md, "Why the search's defaults").
    search_defaults={"beta1": 0.5, "n_prefixes": 5},
    checks_known=True, key_statistics=True, prepare=prepare_rome, plan_search=plan_rome_search,
    summary="ROME (Meng et al. 2022): one rank-one update of one FFN output matrix",
    description="ROME (Meng et al. 2022): one rank-one update of one FFN output matrix, so that the subject's key "
                "gives a value that makes the model say the new object.")
def rome(
    model: Model,
    facts: Sequence[Fact],
    *,
    layers: Sequence[int] | None = None,
    samples: int = DEFAULT_SAMPLES,
    n_key_prefixes: int = N_KEY_PREFIXES,
    reg: float = 1e-4,
    check_known: bool = True,
    stats_bos: bool = False,
    **search,
) -> EditHandle:
    """Edit facts with ROME at one layer (facts one after another, one handle).

    Args:
        model: a loaded Model.
        facts: facts with ``target_new``.
        layers: one layer (default: the best layer of this model's sweep).
        samples: corpus tokens behind C (cached per value).
        n_key_prefixes: prefixes k* is averaged over (one forward pass in all; ROME uses ~20).
        reg: ridge on C (relative to its mean diagonal).
        check_known: warn about facts the model does not know.
        stats_bos: count BOS positions in C (kept under its own cache key; off by default, as the
            committed results were made; MEMIT's setting of the same name).
        **search: the v* search (``steps``, ``lr``, ``kl_weight``, ``weight_decay``,
            ``clamp``, ``stop_nll``, ``n_prefixes``, ...; see
            :class:`~workbench.editing.search.SearchParams`, ROME's defaults there too).

    Returns:
        An EditHandle; ``info["facts"]`` holds per-fact NLL, steps, ‖δ‖ and ‖W k*‖.
    """
    params = SearchParams.from_kwargs(search, method="rome")
    layer = single_layer(model, layers, "rome", hint="; use memit for several")
    if check_known:
        warn_if_unknown(model, facts)
    info: dict = {"layer": layer, "samples": samples, "stats_bos": stats_bos, "facts": []}

    def compute() -> dict[str, Tensor]:
        site = layer_site(model, layer, samples=samples, reg=reg, n_prefixes=params.n_prefixes,
                          n_key_prefixes=n_key_prefixes, info=info, include_bos=stats_bos)
        solve, prefixes, key_prefixes = site.solve, site.prefixes, site.key_prefixes
        name, param, keys_hook, out_hook = site.name, site.param, site.keys_hook, site.out_hook
        dW = torch.zeros(model.d_model, model.d_mlp, dtype=torch.float64, device=model.device)
        for fact in facts:
            extra = virtual_update_hooks(model, {layer: dW}) if bool(dW.any()) else []
            kb = build_batch(model, [fact], key_prefixes, kl_prompt=None, with_targets=False)
            k = capture(model, kb, [keys_hook], extra_hooks=extra)[keys_hook][0].to(model.device)
            res = optimize_deltas(model, fact, [out_hook], prefixes=prefixes, params=params, extra_hooks=extra)
            delta = res.deltas[out_hook].to(model.device)
            dW = dW + rank_one_update(None, k, delta, solve=solve)
            info["facts"].append({
                "subject": fact.subject, "nll": res.nll, "prob": res.prob, "steps": res.steps,
                "delta_norm": float(delta.norm()), "init_norm": float(res.init[out_hook].norm()),
            })
        W = as_matrix(model, param.detach()).double()
        return {name: to_stored(model, W + dW).to(param.dtype)}

    return commit_weights(model, "rome", [layer], [f.to_dict() for f in facts], compute, info=info)
