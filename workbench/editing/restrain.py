"""Restraints on a MEMIT-family update, for many edits: PRUNE and RECT (a few lines each).

* **PRUNE** (Ma et al., ICLR 2025). Sequential edits pile up in the edited matrix;
  the paper traces the loss of general ability to the growing condition number of
  W₀ + ΔW and restrains the large singular values of the *accumulated* update ΔW
  (every active edit of that matrix, this one included). Our reading of its
  restraint: each singular value σ of ΔW above σ_max(W₀) becomes
  σ_max + ln σ − ln σ_max; the rest stay. ``prune=True``.
* **RECT** (Gu et al., 2024, "Model editing harms general abilities ... regularization
  to the rescue"). Keep only the entries of this edit's update with the largest
  *relative* change |ΔW_ij| / |W_ij|, a share ``rect`` of them (the paper: 20 %), and
  zero the others. ``rect=0.2``.

Both change only the update a method hands to ``commit_weights``, so reverting stays
bitwise. Example:

    >>> h = wb.edit(model, facts, method="memit", prune=True, rect=0.2)   # doctest: +SKIP
    >>> h.info["restraint"]["rect_kept"]                                   # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.core.model import Model


def prune_singular_values(delta: Tensor, sigma_max: float) -> tuple[Tensor, int]:
    """``delta`` with each singular value above ``sigma_max`` put on PRUNE's log scale; how many were.

    Example:
        >>> d = torch.diag(torch.tensor([100.0, 2.0, 0.5], dtype=torch.float64))
        >>> out, n = prune_singular_values(d, 4.0)
        >>> [round(float(x), 4) for x in torch.linalg.svdvals(out)], n
        ([7.2189, 2.0, 0.5], 1)
    """
    if not (math.isfinite(sigma_max) and sigma_max > 0):
        raise WorkbenchError(f"PRUNE needs a positive largest singular value of the weight, got {sigma_max}")
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    big = S > sigma_max
    if not bool(big.any()):
        return delta, 0
    S = torch.where(big, sigma_max + torch.log(S) - math.log(sigma_max), S)
    return (U * S) @ Vh, int(big.sum())


def rect_mask(delta: Tensor, weight: Tensor, keep: float) -> Tensor:
    """``delta`` with all but the ``keep`` share of entries, by |ΔW| / |W|, set to zero.

    Example:
        >>> rect_mask(torch.tensor([[1.0, 1.0]]), torch.tensor([[10.0, 1.0]]), 0.5).tolist()
        [[0.0, 1.0]]
    """
    if not 0 < keep <= 1:
        raise WorkbenchError(f"rect is the share of update entries kept, in (0, 1]; got {keep}")
    if keep == 1:
        return delta
    rel = delta.abs() / weight.abs().clamp_min(1e-12)
    n_keep = max(1, int(round(keep * rel.numel())))
    # The n_keep-th largest relative change is the cut; ties at the cut are all kept.
    cut = torch.topk(rel.flatten(), n_keep).values[-1]
    return torch.where(rel >= cut, delta, torch.zeros_like(delta))


def original_weight(model: Model, name: str, current: Tensor) -> Tensor:
    """The parameter ``name`` as it was before every active edit that changed it (``current`` if none)."""
    from workbench.editing.handle import active_edits

    for handle in active_edits(model):  # oldest first: its "before" is the original
        if name in handle.before:
            return handle.before[name]
    return current


def check_prune(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise WorkbenchError(f"{name} must be True or False, got {value!r}")
    return value


def check_rect(name: str, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise WorkbenchError(f"{name} is the share of update entries kept, a number in (0, 1]; got {value!r}")
    return float(value)
