"""The FFN as keys and values, read off the model: key coefficients, value vectors, their logits.

The primitives :mod:`~workbench.locate.memories`, :mod:`~workbench.locate.keycontexts`,
:mod:`~workbench.locate.neurons` and :mod:`~workbench.locate.interventions` share.
At layer ``l`` key ``i``'s coefficient ``m_i`` is read at ``roles.hook("ffn_keys", l)``
and its value vector ``v_i`` is row ``i`` of ``roles.value_vectors``.

Example:
    >>> m = key_coefficients(model, model.tokens("Hello world"), [0])[0]
    >>> m.shape[-1] == model.d_mlp
    True
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.locate.lens import residuals
from workbench.core.model import Model


def key_index(model: Model, key: int) -> int:
    """Validate an FFN key index; return it."""
    if not isinstance(key, int) or isinstance(key, bool):
        raise WorkbenchError(f"key must be an integer, got {key!r}")
    if not 0 <= key < model.d_mlp:
        raise WorkbenchError(f"key {key} is out of range: {model.name} has FFN keys 0..{model.d_mlp - 1}")
    return key


def value_directions(model: Model, layer: int, keys: Tensor | list[int] | None = None) -> Float[Tensor, "keys d_model"]:
    """Value vectors as they enter the residual stream: ``gain ⊙ v_i`` (``v_i`` without a post-norm)."""
    values = model.roles.value_vectors(model.bridge, layer).detach()
    if keys is not None:
        values = values[torch.as_tensor(keys, dtype=torch.long, device=values.device)]
    gain = model.roles.value_direction_gain(model.bridge, layer)
    return values if gain is None else values * gain


def value_logits(model: Model, layer: int, keys: Tensor | list[int]) -> Float[Tensor, "keys d_vocab"]:
    """Each chosen value vector read through the final norm and unembedding (see module doc)."""
    with torch.no_grad():
        return model.unembed(value_directions(model, layer, keys))


def key_coefficients(model: Model, tokens: Tensor, layers: list[int]) -> dict[int, Float[Tensor, "pos d_mlp"]]:
    """FFN key coefficients ``m`` of one prompt at the given layers."""
    names = {layer: model.roles.hook("ffn_keys", layer) for layer in layers}
    acts = residuals(model, tokens, list(names.values()))
    return {layer: acts[name] for layer, name in names.items()}
