"""Where an FFN's value matrix is and how an update to it is laid out.

The editors write ``[d_model, d_mlp]`` updates (v = W k); a family may store that
matrix transposed. These helpers find the parameter and convert between the two.

Example:
    >>> name, param = value_param(model, 4)                # doctest: +SKIP
    >>> as_matrix(model, param.detach()).shape              # doctest: +SKIP
    torch.Size([640, 2048])
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.core.model import Model


def param_name(model: Model, param: torch.nn.Parameter) -> str:
    """The Hugging Face name of a parameter (as ``commit_weights`` wants it), by identity."""
    for name, p in model.hf_model.named_parameters(remove_duplicate=False):
        if p is param:
            return name
    raise WorkbenchError("parameter not found in the model (was the bridge rebuilt?)")


def value_param(model: Model, layer: int) -> tuple[str, torch.nn.Parameter]:
    """Name and parameter of the FFN output matrix of ``layer``."""
    p = model.roles.value_weight(model.bridge, layer)
    return param_name(model, p), p


def to_stored(model: Model, dW: Float[Tensor, "d_model d_mlp"]) -> Tensor:
    """An update written as ``[d_model, d_mlp]`` (out x in) in the parameter's own layout."""
    return dW.T if model.roles.value_weight_rows_are_values else dW


def as_matrix(model: Model, weight: Tensor) -> Float[Tensor, "d_model d_mlp"]:
    """The stored FFN output parameter as an ``[d_model, d_mlp]`` matrix (v = W k)."""
    return weight.T if model.roles.value_weight_rows_are_values else weight
