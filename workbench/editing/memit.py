"""MEMIT: many facts at once, spread over a window of FFN layers (Meng et al. 2023).

For facts i = 1..n and layers l₁ < … < L:

1. Per fact, a target residual z_i at the last subject token after block L:
   δ_i is optimised at L's FFN output (as in ROME), and z_i is the residual the
   model then has there (a forward pass with δ_i added, averaged over contexts).
2. For each layer l in order, with the updates of earlier layers in place
   (through hooks): keys K_l (one column per fact, averaged over contexts), the
   remaining residual R = z − h_L, and this layer's share R / (L − l + 1).
3. ΔW_l = E K_lᵀ (λ C_l + K_l K_lᵀ)⁻¹ in float64, where E is the share mapped
   into FFN-output space.

Our choice for Gemma's post-FFN norm (y = g ⊙ x / rms(x) is what the FFN adds):
the residual share s is mapped to the FFN-output change ε = rms(x) · s / g,
the inverse of the norm's Jacobian on everything but the radial direction
(which the norm removes anyway). What this first-order map misses, the later
layers of the window pick up, because R is re-measured at every layer. For a
family without a post-norm, ε = s exactly.

MEMIT assumes a change written at an early layer reaches block L about as it
was written. On gemma-3-270m it does not: with 100 facts on layers 0-4, the
mean gap ‖R‖ grew from 983 before layer 0's update to 1,226 before layer 3's
(``info["residual_norms"]``; see assets/sweeps/README.md). ``passes=2`` goes
through the layers a second time to spend what is still missing — our
addition, off by default (measured in the same file). ``targets="each"``
(also ours, off by default) drops the assumption instead: a δ per layer,
searched jointly, and each layer solved for its own (see :func:`spread_edit`).

Example:
    >>> h = wb.edit(model, facts, method="memit")                 # doctest: +SKIP
    >>> h.layers
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from workbench.core import activations
from workbench.editing.defaults import window_layers
from workbench.editing.handle import EditHandle, commit_weights
from workbench.editing.optimize import (
    _add_at,
    as_matrix,
    build_batch,
    capture,
    context_prefixes,
    to_stored,
    value_param,
    virtual_update_hooks,
    warn_if_unknown,
)
from workbench.checks import Number, Whole
from workbench.editing.registry import register_method
from workbench.editing.targets import optimize_deltas, search_deltas
from workbench.editing.restrain import check_prune, check_rect, original_weight, prune_singular_values, rect_mask
from workbench.editing.search import SearchParams
from workbench.editing.stats import DEFAULT_SAMPLES, second_moments
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model
from workbench.runtime.progress import progress


#: The declared ranges of the settings spread_edit adds to the target search (MEMIT, PMET).
SPREAD_LIMITS = {"samples": Whole(1, 1_000_000), "mom2_weight": Number(0, strict=True), "passes": Whole(1, 10),
                 "prune": check_prune, "rect": check_rect}


def residual_targets(
    model: Model, facts: Sequence[Fact], prefixes: Sequence[str], last: int, deltas: dict[str, Tensor]
) -> Tensor:
    """z_i: the residual after block ``last`` at the last subject token with fact i's δs added.

    ``deltas[hook_name]`` is ``[n_facts, d]``; returns ``[n_facts, d_model]`` (mean over contexts).
    """
    batch = build_batch(model, facts, prefixes, kl_prompt=None, with_targets=False)
    rows = torch.tensor(batch.rows(kl=False))
    fact_of = torch.tensor(batch.fact_of)[rows]
    subj = torch.tensor(batch.subject_pos)[rows]
    resid = model.roles.hook("resid", last)
    # Chunked, with the δ hooks aligned to each chunk's rows.
    out = torch.zeros(len(facts), model.d_model, dtype=torch.float64)
    count = torch.zeros(len(facts), dtype=torch.float64)
    for start in range(0, len(rows), 64):
        sl = slice(start, start + 64)
        r = rows[sl]
        chunk_hooks = [
            (name, _add_at(torch.arange(len(r)), subj[sl].to(model.device), d[fact_of[sl]].float().to(model.device)))
            for name, d in deltas.items()
        ]
        # z is read at block `last`; the blocks above cannot change it.
        got = activations.capture(model, batch.ids[r], [resid], mask=batch.mask[r], positions=subj[sl],
                                  extra_hooks=chunk_hooks)
        z = got[resid].double().cpu()
        out.index_add_(0, fact_of[sl], z)
        count.index_add_(0, fact_of[sl], torch.ones(len(r), dtype=torch.float64))
    return out / count[:, None]


def _to_ffn_space(model: Model, layer: int, share: Tensor, rms: Tensor) -> Tensor:
    """Map a wanted residual change to a change of the raw FFN output (see module doc)."""
    gain = model.roles.value_direction_gain(model.bridge, layer)
    if gain is None:
        return share
    gain = gain.double().cpu()
    # Gemma's post-FFN norm has dimensions with (near) zero gain: the FFN cannot
    # write there at all, so those components of the wanted change are dropped
    # rather than divided by ~0 (which gave inf updates).
    reachable = gain.abs() > 1e-3 * gain.abs().max()
    inverse = torch.where(reachable, 1.0 / torch.where(reachable, gain, torch.ones_like(gain)), torch.zeros_like(gain))
    return share * rms[:, None] * inverse[None, :]


def spread_edit(
    model: Model,
    facts: Sequence[Fact],
    layers: Sequence[int],
    *,
    method: str,
    target_sites: Sequence[str],
    keep_sites: Sequence[str],
    divide: str = "linear",
    samples: int = DEFAULT_SAMPLES,
    stats_bos: bool = False,
    mom2_weight: float | None = None,
    passes: int = 1,
    targets: str = "last",
    check_known: bool = True,
    layer_solve: Callable[[int, Tensor, Tensor, Tensor], Tensor] | None = None,
    memory: dict[str, Tensor] | None = None,
    prune: bool = False,
    rect: float | None = None,
    check_statistics: Callable[[dict[int, Tensor]], None] | None = None,
    **search,
) -> EditHandle:
    """The MEMIT/PMET update; see the module docstring.

    Args:
        target_sites: hook names where per-fact δs are optimised (at the last layer).
        keep_sites: which of them define the residual target z (PMET drops attention's).
        divide: ``"linear"`` (R / remaining layers, MEMIT) or ``"sqrt"`` (PMET).
        stats_bos: C counts the BOS positions too (AlphaEdit's published recipe).
        mom2_weight: λ, how strongly the other keys (C) resist the change. Default
            d_mlp: for a typical key kᵀ(λC)⁻¹k ≈ d_mlp/λ, so λ = d_mlp lets a
            single fact reach about half its target at each layer, as MEMIT's
            λ = 15000 does for GPT-J's 16384 keys. With ``targets="each"``: 5·d_mlp.
        passes: times to go through the layers (our addition). MEMIT goes once,
            assuming a change at an early layer reaches the last one unchanged; on
            gemma-3-270m it does not (module docstring), so a second pass spends the
            residual still missing after the first.
        targets: ``"last"`` (MEMIT): one δ per fact at the last layer, whose residual
            z every layer works towards. ``"each"`` (our addition, MEMIT only): the
            search optimises one δ per window layer jointly, through the real blocks
            and norms between them, and each layer is then asked for its own δ
            (less what its update so far already gives), so nothing assumes that an
            early change reaches the last layer as written.
        layer_solve: ``(layer, K [d_mlp, n], E [d_model, n], C) -> ΔW [d_model, d_mlp]`` in
            place of MEMIT's ``E Kᵀ (λC + K Kᵀ)⁻¹`` (AlphaEdit's projected solve).
        memory: tensors the method keeps with the edit (:attr:`EditHandle.memory`), filled by
            ``layer_solve``; they join the handle only if the edit is applied.
        prune: PRUNE: put the accumulated update's singular values above σ_max(W₀) on a log
            scale (:mod:`~workbench.editing.restrain`).
        rect: RECT: keep this share of the update's entries, those with the largest relative
            change (the paper: 0.2); None keeps all.
        check_statistics: called with every layer's C before the target search, to refuse a
            setting C rules out (AlphaEdit: a cut that leaves no free direction) before minutes
            of searching rather than after.
        **search: the per-fact target search (``steps``, ``lr``, ``n_prefixes``, ...; see
            :class:`~workbench.editing.search.SearchParams`, each method's defaults there too).
    """
    params = SearchParams.from_kwargs(search, method=method)
    layers, mom2_weight = _checked(model, layers, method, targets, mom2_weight, target_sites, keep_sites)
    last = layers[-1]
    per_layer = {model.roles.hook("ffn_out", l): l for l in layers} if targets == "each" else {}
    if per_layer:
        target_sites = keep_sites = list(per_layer)
    if check_known:
        warn_if_unknown(model, facts)
    info: dict = {"layers": layers, "samples": samples, "stats_bos": stats_bos, "mom2_weight": mom2_weight, "passes": passes,
                  "targets": targets, "facts": [],
                  "residual_norms": {}, "misses": {}}  # per layer, one entry per pass

    def compute() -> dict[str, Tensor]:
        t0 = time.perf_counter()
        Cs = second_moments(model, layers, samples=samples, include_bos=stats_bos)
        info["stats_seconds"] = time.perf_counter() - t0
        if check_statistics is not None:
            check_statistics(Cs)
        prefixes = context_prefixes(model, params.n_prefixes)
        t0 = time.perf_counter()
        deltas = _targets(model, facts, list(target_sites), list(keep_sites), prefixes, params, info, method)
        info["target_seconds"] = time.perf_counter() - t0
        z = residual_targets(model, facts, prefixes, last, deltas)
        keys_batch = build_batch(model, facts, prefixes, kl_prompt=None, with_targets=False)
        updates: dict[int, Tensor] = {}
        resid_hook = model.roles.hook("resid", last)
        for i, layer in [(i, l) for _ in range(passes) for i, l in enumerate(layers)]:
            keys_hook = model.roles.hook("ffn_keys", layer)
            out_hook = model.roles.hook("ffn_out", layer)
            got = capture(model, keys_batch, [keys_hook, resid_hook], extra_hooks=virtual_update_hooks(model, updates))
            K = got[keys_hook].T  # [d_mlp, n]
            R = z - got[resid_hook]  # [n, d_model]
            if per_layer:
                # This layer's own δ, less what its update so far adds for these keys.
                E = deltas[out_hook].T.to(K.dtype)
                if layer in updates:
                    E = E - updates[layer].double().cpu() @ K
            else:
                rms = _mean_rms(model, keys_batch, out_hook, updates)
                remaining = len(layers) - i
                share = R / (math.sqrt(remaining) if divide == "sqrt" else remaining)
                E = _to_ffn_space(model, layer, share, rms).T  # [d_model, n]
            C = Cs[layer]
            if layer_solve is not None:
                dW = layer_solve(layer, K, E, C)
            else:
                A = mom2_weight * C + K @ K.T
                # Solve A X = K E^T (A symmetric) rather than inverting A.
                dW = torch.linalg.solve(A, K @ E.T).T
            if not torch.isfinite(dW).all():
                raise WorkbenchError(f"{method} produced a non-finite update at layer {layer}; nothing changed")
            updates[layer] = updates[layer] + dW.to(model.device) if layer in updates else dW.to(model.device)
            info["residual_norms"].setdefault(layer, []).append(float(R.norm(dim=-1).mean()))
            # How much of what this layer was asked for its update gives (0 = all, 1 = none): λC's price.
            miss = (dW @ K - E).norm(dim=0) / E.norm(dim=0).clamp(min=1e-12)
            info["misses"].setdefault(layer, []).append(float(miss.mean()))
        new = _restrained(model, layers, updates, rect=rect, prune=prune, info=info)
        # How much of the residual is still missing after all layers (0 = every target met).
        final = capture(model, keys_batch, [resid_hook], extra_hooks=virtual_update_hooks(model, updates))
        info["final_residual_norm"] = float((z - final[resid_hook]).norm(dim=-1).mean())
        return new

    return commit_weights(model, method, layers, [f.to_dict() for f in facts], compute, info=info, memory=memory)


def _mean_rms(model: Model, batch, out_hook: str, updates: dict[int, Tensor]) -> Tensor:
    """Per fact, the mean over contexts of rms(ffn_out) at the last subject token."""
    rows_all = batch.rows(kl=False)
    n = max(batch.fact_of) + 1
    sums = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.float64)
    hooks = virtual_update_hooks(model, updates)
    for start in range(0, len(rows_all), 64):
        rows = rows_all[start : start + 64]
        pos = torch.tensor([batch.subject_pos[r] for r in rows])
        # Read after the virtual updates (extra hooks come first), so it sees this layer's updated output.
        got = activations.capture(model, batch.ids[rows], [out_hook], mask=batch.mask[rows], positions=pos,
                                  extra_hooks=hooks)
        x = got[out_hook].double().cpu()
        idx = torch.tensor([batch.fact_of[r] for r in rows])
        sums.index_add_(0, idx, x.pow(2).mean(-1).sqrt())
        counts.index_add_(0, idx, torch.ones(len(rows), dtype=torch.float64))
    return sums / counts


def _checked(model: Model, layers, method: str, targets: str, mom2_weight: float | None, target_sites, keep_sites):
    """The window's layers sorted, and λ (its default when None), after refusing what does not fit."""
    layers = sorted(model.layer_index(int(l)) for l in layers)
    if len(set(layers)) != len(layers):
        raise WorkbenchError(f"repeated layers in {layers}")
    if targets not in ("last", "each"):
        raise WorkbenchError(f"targets must be 'last' (MEMIT) or 'each' (a δ per layer), got {targets!r}")
    if targets == "each" and list(keep_sites) != list(target_sites):
        raise WorkbenchError(f"targets='each' is for MEMIT's FFN-only targets, not {method}'s")
    if mom2_weight is None:
        # The default λ: d_mlp, or 5·d_mlp with targets="each" (docs/results.md has the sweep behind it).
        mom2_weight = float(model.d_mlp) * (5 if targets == "each" else 1)
    return layers, mom2_weight


def _restrained(model: Model, layers: Sequence[int], updates: dict[int, Tensor], *, rect: float | None, prune: bool,
                info: dict) -> dict[str, Tensor]:
    """The new weights of ``layers``, each update first restrained by RECT and PRUNE if asked
    (``updates`` is rewritten with what is applied; ``info["restraint"]`` says what they did)."""
    new = {}
    for layer in layers:
        name, param = value_param(model, layer)
        W = as_matrix(model, param.detach()).double()
        upd = updates[layer].double()
        if rect is not None:
            upd = rect_mask(upd, W, rect)
            info.setdefault("restraint", {}).setdefault("rect_kept", {})[layer] = float((upd != 0).double().mean())
        if prune:
            W0 = as_matrix(model, original_weight(model, name, param.detach())).double().to(W.device)
            total, n_big = prune_singular_values(W + upd - W0, float(torch.linalg.matrix_norm(W0, ord=2)))
            if n_big:
                upd = W0 + total - W
            info.setdefault("restraint", {}).setdefault("pruned_singular_values", {})[layer] = n_big
        updates[layer] = upd.to(updates[layer].dtype)
        new[name] = to_stored(model, W + upd).to(param.dtype)
    return new


#: Facts whose target searches run as one batch (each fact's search is independent of the others').
#: 1 on a CPU, where the search is compute-bound and batches barely pay (docs/performance.md).
TARGET_CHUNK = 1 if not torch.cuda.is_available() else 8


def _targets(model: Model, facts: Sequence[Fact], target_sites: list[str], keep_sites: list[str], prefixes, params,
             info: dict, method: str) -> dict[str, Tensor]:
    """Each fact's δ at ``keep_sites`` (``[n_facts, d]`` per site), searched :data:`TARGET_CHUNK` facts a batch."""
    alone = keep_sites if keep_sites != target_sites else ()
    deltas: dict[str, Tensor] = {}
    chunks = [list(facts[i:i + TARGET_CHUNK]) for i in range(0, len(facts), TARGET_CHUNK)]
    i = 0
    for chunk in progress(chunks, desc=f"{method} targets"):
        results = (search_deltas(model, chunk, target_sites, prefixes=prefixes, params=params, alone=alone)
                   if len(chunk) > 1 else
                   [optimize_deltas(model, chunk[0], target_sites, prefixes=prefixes, params=params, alone=alone)])
        for fact, res in zip(chunk, results):
            for n in keep_sites:
                if n not in deltas:
                    deltas[n] = torch.zeros(len(facts), res.deltas[n].shape[0], dtype=torch.float64)
                deltas[n][i] = res.deltas[n]
            info["facts"].append({"subject": fact.subject, "nll": res.nll, "prob": res.prob, "steps": res.steps})
            i += 1
    return deltas


@register_method(
    "memit", order=1, layers=window_layers, limits=SPREAD_LIMITS, search=True, checks_known=True,
    key_statistics=True, summary="MEMIT (Meng et al. 2023): ROME's update spread over a window of FFN layers",
    description="MEMIT (Meng et al. 2023): ROME's update spread over a window of FFN layers, built for many facts "
                "at once.")
def memit(model: Model, facts: Sequence[Fact], *, layers: Sequence[int] | None = None, **hparams) -> EditHandle:
    """Edit many facts in one update over a window of layers.

    Args:
        model: a loaded Model.
        facts: facts with ``target_new`` (no subject twice with different targets).
        layers: consecutive layers (default: a window ending at the best ROME layer).
        **hparams: see :func:`spread_edit` (``mom2_weight``, ``samples``, ``steps``, ...).

    Example:
        >>> h = wb.edit(model, facts[:100], method="memit")     # doctest: +SKIP
    """
    layers = list(layers) if layers is not None else window_layers(model)
    last = max(layers)
    sites = [model.roles.hook("ffn_out", last)]
    return spread_edit(model, facts, layers, method="memit", target_sites=sites, keep_sites=sites, divide="linear", **hparams)
