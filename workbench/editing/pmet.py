"""PMET: MEMIT with attention and FFN targets optimised together (Li et al. 2024).

Per fact, δs are optimised jointly at the last layer's attention output and FFN
output (last subject token); only the FFN part defines the residual target that
the FFN weights are then made to produce — attention weights are never changed.
Because attention takes part of the work in the optimisation, the FFN target is
smaller and more "precise". The remaining residual is divided by
√(remaining layers) rather than by their number, as in the paper.

Our addition: the loss also asks the FFN δ *alone* to say the new object. On
gemma-3-270m the jointly optimised δs work together but not apart — for
"Eiffel Tower → Rome" at layer 4, both δs gave P(Rome) = 0.99, the FFN δ alone
0.14, and the PMET edit built from it 0.065 (Paris stayed on top). Since only
the FFN δ is written into weights, it has to carry the fact by itself.

Example:
    >>> h = wb.edit(model, facts, method="pmet")                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.editing.defaults import window_layers
from workbench.editing.handle import EditHandle
from workbench.editing.memit import SPREAD_LIMITS, spread_edit
from workbench.editing.registry import register_method
from workbench.facts import Fact
from workbench.core.model import Model


@register_method(
    "pmet", order=2, layers=window_layers, limits=SPREAD_LIMITS, search=True, checks_known=True,
    key_statistics=True, summary="PMET (Li et al. 2024): MEMIT with attention and FFN targets, FFN weights only",
    description="PMET (Li et al. 2024): like MEMIT, but the target is set for the attention and FFN outputs "
                "separately and only the FFN weights are changed.")
def pmet(model: Model, facts: Sequence[Fact], *, layers: Sequence[int] | None = None, **hparams) -> EditHandle:
    """Edit many facts at once with PMET (FFN weights of a window of layers).

    Args:
        model: a loaded Model.
        facts: facts with ``target_new``.
        layers: consecutive layers (default: the same window as MEMIT).
        **hparams: see :func:`~workbench.editing.memit.spread_edit`.
    """
    layers = list(layers) if layers is not None else window_layers(model)
    last = max(layers)
    ffn = model.roles.hook("ffn_out", last)
    attn = model.roles.hook("attn", last)
    return spread_edit(
        model, facts, layers, method="pmet", target_sites=[attn, ffn], keep_sites=[ffn], divide="sqrt", **hparams
    )
