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

from workbench.checks import Number
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


def kept_keys(model: Model, layer: int) -> Tensor | None:
    """The keys ``[d_mlp, m]`` of the AlphaEdit edits applied to ``model`` at ``layer`` (None: none)."""
    parts = [h.memory[f"keys.L{layer}"] for h in active_edits(model)
             if h.method == "alphaedit" and f"keys.L{layer}" in h.memory]
    return torch.cat(parts, dim=1) if parts else None


@register_method(
    "alphaedit", order=4, layers=window_layers, checks_known=True, key_statistics=True,
    limits={**SPREAD_LIMITS, "null_energy": Number(0, 1, strict=True), "l2": Number(0, strict=True)},
    summary="AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the preserved keys' null space",
    description="AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the null space of the keys of text "
                "it should leave alone, so that later edits disturb earlier ones less.")
def alphaedit(model: Model, facts: Sequence[Fact], *, layers: Sequence[int] | None = None,
              null_energy: float = NULL_ENERGY, l2: float = L2, **hparams) -> EditHandle:
    """Edit facts over MEMIT's window with the null-space-projected solve (module docstring).

    Args:
        model: a loaded Model.
        facts: facts with ``target_new``.
        layers: consecutive layers (default: MEMIT's window).
        null_energy: the share of C's trace its null space may hold (module docstring).
        l2: α relative to C's mean diagonal.
        **hparams: MEMIT's (``samples``, ``passes``, ``steps``, ...; ``mom2_weight`` is not used).

    Example:
        >>> h = wb.edit(model, facts[:10], method="alphaedit")          # doctest: +SKIP
    """
    if "mom2_weight" in hparams:
        raise WorkbenchError("alphaedit does not use mom2_weight (the projection replaces MEMIT's λC); "
                             "its settings are null_energy and l2")
    layers = list(layers) if layers is not None else window_layers(model)
    last = max(model.layer_index(int(l)) for l in layers)
    sites = [model.roles.hook("ffn_out", last)]
    memory: dict[str, Tensor] = {}
    null_dims: dict[int, int] = {}

    def solve(layer: int, K: Tensor, E: Tensor, C: Tensor) -> Tensor:
        P, dim = _projector(model, layer, C, null_energy)
        if dim == 0:
            raise WorkbenchError(f"C of layer {layer} has no directions holding under {null_energy:g} of its "
                                 "trace: no free directions to edit in; raise null_energy")
        null_dims[layer] = dim
        P = P.to(K.device)
        M = K @ K.T
        earlier = kept_keys(model, layer)
        if earlier is not None:
            earlier = earlier.to(K.device, K.dtype)
            M = M + earlier @ earlier.T
        alpha = l2 * float(C.diagonal().mean())
        A = P @ M + alpha * torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
        X = torch.linalg.solve(A, P @ K @ E.T.to(K.dtype))  # [d_mlp, d_model]
        # This edit's keys at this layer (the last pass's) join the kept keys once it is applied.
        memory[f"keys.L{layer}"] = K.detach().float().cpu()
        return X.T

    handle = spread_edit(model, facts, layers, method="alphaedit", target_sites=sites, keep_sites=sites,
                         divide="linear", layer_solve=solve, memory=memory, **hparams)
    handle.info["null_dim"] = dict(null_dims)
    handle.info["null_energy"], handle.info["l2"] = null_energy, l2
    return handle
