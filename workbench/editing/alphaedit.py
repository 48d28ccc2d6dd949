"""AlphaEdit: MEMIT's update projected onto the null space of the preserved keys (Fang et al. 2025).

MEMIT trades the new facts against the keys of natural text through λC; over many
edits that trade piles up and the model degrades. AlphaEdit removes the trade: the
update is confined to directions the preserved keys (C = E[k kᵀ] over natural text)
do not use, so ΔW k ≈ 0 for every key in C's dominant subspace, and the solve spends
itself entirely on the new facts and on not disturbing *earlier* edits.

Per layer of MEMIT's window, with this edit's keys K, the wanted output changes E
(MEMIT's spread of the residual), the keys K_p kept from earlier AlphaEdit edits and
the projector P onto C's null space:

    ΔW = E Kᵀ P (P (K_p K_pᵀ + K Kᵀ) + α I)⁻¹        (written here as a solve)

The solution lies in the range of P (the identity (I − P)(P M + α I) X = α (I − P) X
forces (I − P) X = 0), so a preserved key's output does not move at all, up to rounding.

**The null space, relative to the spectrum.** P spans C's smallest eigen-directions
that together hold at most ``null_energy`` of its trace (default 1 %: the directions
natural text puts its last 1 % of key energy in). The paper cuts at a fixed eigenvalue
(1e-2 on its own C), which depends on how C is scaled, on the corpus and on the model;
a share of the trace means the same on any of them. On gemma-3-270m's C (20,000 tokens)
it leaves 750, 317, 347, 675 and 360 of 2,048 directions free at layers 0-4, where a cut
at 1e-2 × the mean eigenvalue would leave 101, 0, 0, 27 and 3 (measured when choosing
it). ``info["null_dim"]`` reports each layer's.

**Kept keys are model state.** An edit stores its keys in its handle's ``memory``;
later AlphaEdit solves read them from the edits still applied (the model's edit
stack), so reverting an edit takes its keys out of later solves, and a saved edit
carries its keys with it.

α (``l2``) is relative to the mean diagonal of C (one typical key's energy per
dimension), so that it too transfers across models.

Example:
    >>> h = wb.edit(model, facts[:100], method="alphaedit")          # doctest: +SKIP
    >>> h.info["null_dim"]                                            # doctest: +SKIP
    {0: 612, 1: 580, ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from workbench.checks import Number, check_flag
from workbench.core.activations import capture
from workbench.editing.defaults import window_layers
from workbench.editing.handle import EditHandle, active_edits
from workbench.editing.memit import SPREAD_LIMITS, spread_edit
from workbench.editing.registry import register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model

#: The null space holds C's smallest directions up to this share of its trace.
NULL_ENERGY = 1e-2
#: α relative to the mean diagonal of C.
L2 = 1.0

# The published recipe (the authors' code, jianghoucheng/AlphaEdit: hparams and get_project):
#: the absolute eigenvalue cut of the projector,
PAPER_CUT = 2e-2
#: α, absolute,
PAPER_L2 = 10.0
#: C's corpus tokens (100,000 Wikipedia articles there; this corpus has about a million tokens),
PAPER_SAMPLES = 100_000
#: and Llama-3-8B's window, layers 4-8 of 32.
PAPER_WINDOW, PAPER_DEPTH = (4, 8), 32
#: Held-out tokens behind the diagnostics' leakage.
DIAGNOSTIC_SAMPLES = 20_000


def null_projector(C: Tensor, energy: float = NULL_ENERGY) -> tuple[Tensor, int]:
    """P = U Uᵀ over C's smallest eigenvectors whose eigenvalues sum to at most ``energy`` · tr C; and dim P.

    Example:
        >>> C = torch.diag(torch.tensor([10.0, 5.0, 1e-4], dtype=torch.float64))
        >>> P, dim = null_projector(C)
        >>> dim, float(P[2, 2])
        (1, 1.0)
    """
    C = C.double()
    values, vectors = torch.linalg.eigh(C)  # ascending
    share = torch.cumsum(values.clamp(min=0), 0) / values.clamp(min=0).sum()
    free = vectors[:, share <= energy]
    return free @ free.T, int(free.shape[1])


def _projector(model: Model, layer: int, C: Tensor, energy: float) -> tuple[Tensor, int]:
    # An eigendecomposition of d_mlp × d_mlp costs seconds: once per (layer, C, energy) per model.
    key = ("null_projector", layer, energy, float(C.trace()), tuple(C.shape))
    return model.memo.get(key, lambda: null_projector(C, energy))


def kept_keys(model: Model, layer: int, method: str = "alphaedit") -> Tensor | None:
    """The keys ``[d_mlp, m]`` of ``method``'s edits applied to ``model`` at ``layer`` (None: none)."""
    parts = [h.memory[f"keys.L{layer}"] for h in active_edits(model)
             if h.method == method and f"keys.L{layer}" in h.memory]
    return torch.cat(parts, dim=1) if parts else None


def cut_projector(C: Tensor, cut: float = PAPER_CUT) -> tuple[Tensor, int]:
    """The published projector: P = U Uᵀ over C's eigenvectors whose eigenvalue is below ``cut``
    (an absolute threshold, as the authors' code applies it to the singular values of C; for a
    symmetric positive semi-definite C they are its eigenvalues); and dim P.

    Example:
        >>> C = torch.diag(torch.tensor([10.0, 5.0, 1e-3], dtype=torch.float64))
        >>> P, dim = cut_projector(C, 2e-2)
        >>> dim, float(P[2, 2]), float(P[0, 0])
        (1, 1.0, 0.0)
    """
    values, vectors = torch.linalg.eigh(C.double())
    free = vectors[:, values < cut]
    return free @ free.T, int(free.shape[1])


def paper_layers(model: Model) -> list[int]:
    """The published window mapped to this model: Llama-3-8B's layers 4-8 of 32 at the same depth,
    five consecutive layers from ``round(4 / 32 · n_layers)`` (layers 2-6 of gemma-3-270m's 18)."""
    start = round(PAPER_WINDOW[0] / PAPER_DEPTH * model.n_layers)
    width = PAPER_WINDOW[1] - PAPER_WINDOW[0] + 1
    start = max(0, min(start, model.n_layers - width))
    return list(range(start, min(model.n_layers, start + width)))


def _diagnostics(model: Model, handle: EditHandle, projectors: dict[int, Tensor]) -> dict:
    """Per layer: ‖ΔW‖/‖W‖, the held-out leakage tr(P C_h)/tr(C_h), and ‖ΔW k_BOS‖.

    C_h is the keys' second moment on held-out text (not the text P was made from), so the
    leakage says how much of ordinary text's key energy the free directions still carry: 0
    means an update there cannot touch held-out keys. k_BOS is the key at the BOS position, the
    attention sink whose output every later position reads.
    """
    from workbench.editing.optimize import as_matrix, value_param
    from workbench.editing.stats import second_moments

    held = second_moments(model, list(projectors), corpus="heldout", samples=DIAGNOSTIC_SAMPLES, include_bos=True)
    bos = model.tokenizer.bos_token_id
    keys_bos = {}
    if bos is not None:
        ids = torch.tensor([[bos]], device=model.device)
        got = capture(model, ids, [model.roles.hook("ffn_keys", l) for l in projectors])
        keys_bos = {l: got[model.roles.hook("ffn_keys", l)][0, 0].double().cpu() for l in projectors}
    out = {}
    for layer, P in projectors.items():
        name, _ = value_param(model, layer)
        before = as_matrix(model, handle.before[name]).double().cpu()
        dW = as_matrix(model, handle.after[name]).double().cpu() - before
        C_h = held[layer].cpu()
        row = {"update_norm_ratio": float(dW.norm() / before.norm()),
               "heldout_leakage": float((P.cpu() * C_h).sum() / C_h.trace())}  # tr(P C_h), P and C_h symmetric
        if layer in keys_bos:
            row["bos_output_change"] = float((dW @ keys_bos[layer]).norm())
        out[layer] = row
    return out


def _projected_solve(model: Model, *, method: str, make_projector, alpha_of, memory: dict, projectors: dict,
                     null_dims: dict):
    """AlphaEdit's per-layer solve (module docstring) with a given projector and α."""

    def solve(layer: int, K: Tensor, E: Tensor, C: Tensor) -> Tensor:
        P, dim = make_projector(layer, C)
        if dim == 0:
            raise _no_free_direction(method, layer)
        null_dims[layer] = dim
        projectors[layer] = P
        P = P.to(K.device)
        M = K @ K.T
        earlier = kept_keys(model, layer, method)
        if earlier is not None:
            earlier = earlier.to(K.device, K.dtype)
            M = M + earlier @ earlier.T
        A = P @ M + alpha_of(C) * torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
        X = torch.linalg.solve(A, P @ K @ E.T.to(K.dtype))  # [d_mlp, d_model]
        # This edit's keys at this layer (the last pass's) join the kept keys once it is applied.
        memory[f"keys.L{layer}"] = K.detach().float().cpu()
        return X.T

    return solve


@register_method(
    "alphaedit", order=4, layers=window_layers, checks_known=True, key_statistics=True,
    limits={**SPREAD_LIMITS, "null_energy": Number(0, 1, strict=True), "l2": Number(0, strict=True),
            "diagnostics": check_flag},
    summary="AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the preserved keys' null space",
    description="AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the null space of the keys of text "
                "it should leave alone, so that later edits disturb earlier ones less.")
def alphaedit(model: Model, facts: Sequence[Fact], *, layers: Sequence[int] | None = None,
              null_energy: float = NULL_ENERGY, l2: float = L2, diagnostics: bool = True, **hparams) -> EditHandle:
    """Edit facts over MEMIT's window with the null-space-projected solve (module docstring).

    Args:
        model: a loaded Model.
        facts: facts with ``target_new``.
        layers: consecutive layers (default: MEMIT's window).
        null_energy: the share of C's trace its null space may hold (module docstring).
        l2: α relative to C's mean diagonal.
        diagnostics: compute ``info["diagnostics"]`` (per layer ‖ΔW‖/‖W‖, held-out leakage, ‖ΔW k_BOS‖).
        **hparams: MEMIT's (``samples``, ``passes``, ``steps``, ...; ``mom2_weight`` is not used).

    Example:
        >>> h = wb.edit(model, facts[:10], method="alphaedit")          # doctest: +SKIP
    """
    return _alphaedit(model, facts, method="alphaedit", layers=layers if layers is not None else window_layers(model),
                      make_projector=lambda layer, C: _projector(model, layer, C, null_energy),
                      alpha_of=lambda C: l2 * float(C.diagonal().mean()), diagnostics=diagnostics,
                      settings={"null_energy": null_energy, "l2": l2}, **hparams)


@register_method(
    "alphaedit-paper", order=5, layers=paper_layers, checks_known=True, key_statistics=True,
    statistics={"samples": PAPER_SAMPLES, "include_bos": True},
    limits={**SPREAD_LIMITS, "null_cut": Number(0, strict=True), "l2": Number(0, strict=True),
            "diagnostics": check_flag, "stats_bos": check_flag},
    summary="AlphaEdit as published: the authors' projector cut, L2 and statistics",
    description="AlphaEdit with the published recipe (the authors' code): P keeps the directions whose eigenvalue "
                "of C is below 2e-2, C over 100,000 tokens with BOS counted, α = 10, the paper's layer window.")
def alphaedit_paper(model: Model, facts: Sequence[Fact], *, layers: Sequence[int] | None = None,
                    null_cut: float = PAPER_CUT, l2: float = PAPER_L2, diagnostics: bool = True,
                    stats_bos: bool = True, **hparams) -> EditHandle:
    """AlphaEdit as its authors' code does it (see :func:`cut_projector`, :func:`paper_layers`).

    Args:
        null_cut: the absolute eigenvalue threshold of the projector (the code's 2e-2).
        l2: α, absolute (the code's ``L2`` = 10).
        stats_bos: count BOS positions in C (the code does; False only for the ablation).
        **hparams: as :func:`alphaedit` (``samples`` defaults to 100,000 tokens, BOS counted).

    Example:
        >>> h = wb.edit(model, facts[:100], method="alphaedit-paper")     # doctest: +SKIP
        >>> h.info["null_dim"], h.info["diagnostics"]                     # doctest: +SKIP
    """
    hparams.setdefault("samples", PAPER_SAMPLES)
    return _alphaedit(model, facts, method="alphaedit-paper", layers=layers if layers is not None else paper_layers(model),
                      make_projector=lambda layer, C: _memo_cut(model, layer, C, null_cut),
                      alpha_of=lambda C: l2, diagnostics=diagnostics, stats_bos=stats_bos,
                      settings={"null_cut": null_cut, "l2": l2, "l2_absolute": True, "stats_bos": stats_bos},
                      **hparams)


def _no_free_direction(method: str, layer: int) -> WorkbenchError:
    return WorkbenchError(f"C of layer {layer} leaves no free directions to edit in under {method}'s "
                          "null-space setting; loosen it (null_energy or null_cut)")


def _memo_cut(model: Model, layer: int, C: Tensor, cut: float) -> tuple[Tensor, int]:
    key = ("cut_projector", layer, cut, float(C.trace()), tuple(C.shape))
    return model.memo.get(key, lambda: cut_projector(C, cut))


def _alphaedit(model: Model, facts: Sequence[Fact], *, method: str, layers: Sequence[int], make_projector, alpha_of,
               diagnostics: bool, settings: dict, stats_bos: bool = False, **hparams) -> EditHandle:
    if "mom2_weight" in hparams:
        raise WorkbenchError(f"{method} does not use mom2_weight (the projection replaces MEMIT's λC); "
                             f"its settings are {', '.join(settings)}")
    layers = list(layers)
    last = max(model.layer_index(int(l)) for l in layers)
    sites = [model.roles.hook("ffn_out", last)]
    memory: dict[str, Tensor] = {}
    projectors: dict[int, Tensor] = {}
    null_dims: dict[int, int] = {}
    solve = _projected_solve(model, method=method, make_projector=make_projector, alpha_of=alpha_of,
                             memory=memory, projectors=projectors, null_dims=null_dims)

    def refuse_empty_projectors(Cs: dict[int, Tensor]) -> None:
        # Before the search: a setting with no free direction would be refused only after it.
        for layer, C in Cs.items():
            if make_projector(layer, C)[1] == 0:
                raise _no_free_direction(method, layer)

    handle = spread_edit(model, facts, layers, method=method, target_sites=sites, keep_sites=sites,
                         divide="linear", layer_solve=solve, memory=memory, stats_bos=stats_bos,
                         check_statistics=refuse_empty_projectors, **hparams)
    handle.info["null_dim"] = dict(null_dims)
    handle.info.update(settings)
    if diagnostics and handle.changes_weights:
        handle.info["diagnostics"] = _diagnostics(model, handle, projectors)
    return handle


@register_method(
    "memit-kept", order=6, layers=window_layers, search=True, checks_known=True, key_statistics=True,
    limits=SPREAD_LIMITS,
    summary="MEMIT + kept keys: MEMIT's solve with the earlier edits' keys preserved, no projection",
    description="MEMIT with the keys of its earlier edits added to the preserved term (λC + K_p K_pᵀ), the "
                "ablation that separates AlphaEdit's projection from its memory of earlier edits.")
def memit_kept(model: Model, facts: Sequence[Fact], *, layers: Sequence[int] | None = None,
               mom2_weight: float | None = None, **hparams) -> EditHandle:
    """MEMIT whose solve also preserves the keys of the ``memit-kept`` edits still applied.

    ΔW = E Kᵀ (λC + K_p K_pᵀ + K Kᵀ)⁻¹: the earlier edits' keys resist the change as natural
    text's keys do, so a later edit does not undo an earlier one; nothing is projected away.

    Example:
        >>> h = wb.edit(model, facts[:100], method="memit-kept")          # doctest: +SKIP
    """
    layers = list(layers) if layers is not None else window_layers(model)
    memory: dict[str, Tensor] = {}
    weight = mom2_weight if mom2_weight is not None else float(model.d_mlp)

    def solve(layer: int, K: Tensor, E: Tensor, C: Tensor) -> Tensor:
        A = weight * C.to(K.device, K.dtype) + K @ K.T
        earlier = kept_keys(model, layer, "memit-kept")
        if earlier is not None:
            earlier = earlier.to(K.device, K.dtype)
            A = A + earlier @ earlier.T
        memory[f"keys.L{layer}"] = K.detach().float().cpu()
        return torch.linalg.solve(A, K @ E.T.to(K.dtype)).T

    last = max(model.layer_index(int(l)) for l in layers)
    sites = [model.roles.hook("ffn_out", last)]
    return spread_edit(model, facts, layers, method="memit-kept", target_sites=sites, keep_sites=sites,
                       divide="linear", layer_solve=solve, memory=memory, mom2_weight=weight, **hparams)
