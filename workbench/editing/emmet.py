"""EMMET: ROME for a batch, every new fact an equality constraint (Gupta et al. 2024).

"A unified framework for model editing" casts ROME as preserving the keys of natural
text (C = E[k kᵀ]) in the least-squares sense while *forcing* the edited key to its new
value. EMMET keeps that form for a batch of facts at one layer: with the facts' keys
K = [k₁ … kₙ] (each averaged over short prefixes, as ROME's k*) and the value changes
D = [δ₁ … δₙ] from ROME's v* search (each on the unedited model),

    minimise  ‖ΔW‖²_C  subject to  ΔW K = D
    ⇒  ΔW = D (Kᵀ C⁻¹ K)⁻¹ Kᵀ C⁻¹

so every key of the batch moves exactly by its δ, and for one fact this is ROME's
rank-one update δ uᵀ / (uᵀ k) with u = C⁻¹ k. When facts share a subject their keys
are nearly equal and Kᵀ C⁻¹ K is nearly singular; ``constraint_ridge`` (relative to
its mean diagonal) then softens the constraints into a least-squares fit.

Example:
    >>> h = wb.edit(model, facts[:10], method="emmet")             # doctest: +SKIP
    >>> h.info["constraint_residual"] < 1e-6                      # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from workbench.checks import Number
from workbench.editing.defaults import rome_layers, single_layer
from workbench.editing.handle import EditHandle, commit_weights
from workbench.editing.optimize import (
    as_matrix,
    build_batch,
    capture,
    to_stored,
    warn_if_unknown,
)
from workbench.editing.registry import register_method
from workbench.editing.targets import optimize_deltas, search_deltas
from workbench.editing.rome import ROME_LIMITS, layer_site, plan_rome_search
from workbench.editing.search import SearchParams
from workbench.editing.stats import DEFAULT_SAMPLES
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model
from workbench.runtime.progress import progress


def equality_update(keys: Tensor, deltas: Tensor, solve, *, constraint_ridge: float = 0.0) -> Tensor:
    """ΔW = D (Kᵀ C⁻¹ K + ρ)⁻¹ Kᵀ C⁻¹ for keys ``[d_mlp, n]`` and deltas ``[d_model, n]``, in float64.

    ``solve(X)`` applies C⁻¹ (with ROME's ridge) to the columns of ``X`` (as
    :func:`~workbench.editing.stats.ridge_solver` does). With ρ = 0,
    ``ΔW @ keys == deltas`` up to rounding.

    Example:
        >>> K = torch.eye(3, dtype=torch.float64)[:, :2]; D = torch.ones(2, 2, dtype=torch.float64)
        >>> torch.allclose(equality_update(K, D, lambda x: x) @ K, D)
        True
    """
    K, D = keys.double(), deltas.double()
    U = solve(K)  # C⁻¹ K, [d_mlp, n]
    G = K.T @ U  # Kᵀ C⁻¹ K, [n, n], symmetric positive definite for independent keys
    if constraint_ridge:
        G = G + constraint_ridge * G.diagonal().mean() * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    try:
        # ΔW = D G⁻¹ Uᵀ, solved as Gᵀ X = Dᵀ (G symmetric) rather than inverting G.
        X = torch.linalg.solve(G, D.T)  # [n, d_model]
    except torch.linalg.LinAlgError:
        raise WorkbenchError(
            "EMMET's constraint matrix Kᵀ C⁻¹ K is singular: two facts of the batch have the same key "
            "(the same subject at this layer); pass constraint_ridge=1e-2 or edit them apart"
        ) from None
    return X.T @ U.T


def plan_emmet_search(model: Model, fact: Fact, *, constraint_ridge: float = 0.0, **settings):
    """One fact's EMMET search is ROME's (the constraints only combine several facts' δs)."""
    return plan_rome_search(model, fact, **settings)


@register_method(
    "emmet", plan_search=plan_emmet_search, order=3, layers=rome_layers, limits={**ROME_LIMITS, "constraint_ridge": Number(0)},
    checks_known=True, key_statistics=True,
    summary="EMMET (Gupta et al. 2024): ROME's equality constraint for a batch of facts",
    description="EMMET (Gupta et al. 2024): many facts in one closed-form batch update under equality "
                "constraints.")
def emmet(
    model: Model,
    facts: Sequence[Fact],
    *,
    layers: Sequence[int] | None = None,
    samples: int = DEFAULT_SAMPLES,
    n_key_prefixes: int = 20,
    reg: float = 1e-4,
    constraint_ridge: float = 0.0,
    check_known: bool = True,
    **search,
) -> EditHandle:
    """Edit a batch of facts at one layer with equality constraints (module docstring).

    Args:
        model: a loaded Model.
        facts: facts with ``target_new``.
        layers: one layer (default: ROME's).
        samples, n_key_prefixes, reg: as :func:`~workbench.editing.rome.rome`.
        constraint_ridge: ρ relative to the mean diagonal of Kᵀ C⁻¹ K (0: exact constraints).
        **search: the v* search, with ROME's defaults (:class:`~workbench.editing.search.SearchParams`).

    Returns:
        An EditHandle; ``info["constraint_residual"]`` is max ‖ΔW kᵢ − δᵢ‖ / ‖δᵢ‖.
    """
    params = SearchParams.from_kwargs(search, method="rome")
    layer = single_layer(model, layers, "emmet", hint="; EMMET edits one layer")
    if check_known:
        warn_if_unknown(model, facts)
    info: dict = {"layer": layer, "samples": samples, "constraint_ridge": constraint_ridge, "facts": []}

    def compute() -> dict[str, Tensor]:
        site = layer_site(model, layer, samples=samples, reg=reg, n_prefixes=params.n_prefixes,
                          n_key_prefixes=n_key_prefixes, info=info)
        name, param, keys_hook, out_hook = site.name, site.param, site.keys_hook, site.out_hook
        kb = build_batch(model, list(facts), site.key_prefixes, kl_prompt=None, with_targets=False)
        K = capture(model, kb, [keys_hook])[keys_hook].T.to(model.device).double()  # [d_mlp, n]
        deltas = []
        for fact in progress(facts, desc="emmet targets"):
            # Each δ on the unedited model: the constraints, not a sequence, combine the facts.
            res = optimize_deltas(model, fact, [out_hook], prefixes=site.prefixes, params=params)
            deltas.append(res.deltas[out_hook].to(model.device).double())
            info["facts"].append({"subject": fact.subject, "nll": res.nll, "prob": res.prob, "steps": res.steps,
                                  "delta_norm": float(deltas[-1].norm())})
        D = torch.stack(deltas, dim=1)  # [d_model, n]
        dW = equality_update(K, D, site.solve, constraint_ridge=constraint_ridge)
        if not torch.isfinite(dW).all():
            raise WorkbenchError(f"emmet produced a non-finite update at layer {layer}; nothing changed")
        info["constraint_residual"] = float(((dW @ K - D).norm(dim=0) / D.norm(dim=0).clamp(min=1e-12)).max())
        W = as_matrix(model, param.detach()).double()
        return {name: to_stored(model, W + dW).to(param.dtype)}

    return commit_weights(model, "emmet", [layer], [f.to_dict() for f in facts], compute, info=info)

