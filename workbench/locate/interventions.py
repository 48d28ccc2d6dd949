"""Set, scale or suppress chosen FFN keys' coefficients for the duration of a block.

Hooks go on ``roles.hook("ffn_keys", l)`` (the coefficients ``m_i``), so a
change to key ``i`` changes exactly the sub-update ``m_i v_i`` and nothing
upstream of it. Weights are never written; leaving the ``with`` block, also by
an exception or Ctrl-C, removes every hook this module added.

A change is a number (set ``m_i`` to it) or a pair ``("scale", s)`` (multiply
``m_i`` by ``s``; ``("scale", 0)`` suppresses, ``("scale", 2)`` amplifies, as in
Dai et al. 2022) or ``("add", x)``.

Example:
    >>> with intervene(model, {10: {1423: 0.0, 77: ("scale", 2.0)}}):
    ...     probe(model, "The Eiffel Tower is located in the city of", targets=["Paris"])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from workbench.core.activations import hooked
from workbench.errors import WorkbenchError
from workbench.locate.ffn import key_index
from workbench.core.model import Model

Change = float | int | tuple[str, float]
_OPS = ("scale", "add", "set")


def _normalise(model: Model, changes: Mapping[int, Mapping[int, Change]]) -> dict[int, dict[str, tuple[Tensor, Tensor]]]:
    """Validate and group changes per layer and operation into (keys, amounts) tensors."""
    if not isinstance(changes, Mapping):
        raise WorkbenchError("changes must be a mapping {layer: {key: value or ('scale', s)}}")
    plan: dict[int, dict[str, tuple[list[int], list[float]]]] = {}
    for layer, per_key in changes.items():
        layer = model.layer_index(layer)
        if not isinstance(per_key, Mapping):
            raise WorkbenchError(f"changes for layer {layer} must map key index -> value or ('scale', s)")
        for key, change in per_key.items():
            key = key_index(model, key)
            if isinstance(change, tuple):
                if len(change) != 2 or change[0] not in _OPS:
                    raise WorkbenchError(f"change {change!r} for key {key}: use a number, ('scale', s) or ('add', x)")
                op, amount = change
            else:
                op, amount = "set", change
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise WorkbenchError(f"change for key {key} at layer {layer} must be a number, got {amount!r}")
            keys, amounts = plan.setdefault(layer, {}).setdefault(op, ([], []))
            keys.append(key)
            amounts.append(float(amount))
    return {
        layer: {op: (torch.tensor(k, device=model.device), torch.tensor(a)) for op, (k, a) in ops.items()}
        for layer, ops in plan.items()
    }


def _hook_fn(ops: dict[str, tuple[Tensor, Tensor]], position: int | None):
    def fn(acts: Tensor, hook) -> Tensor:
        acts = acts.clone()  # never modify a tensor autograd may still need
        where = (Ellipsis,) if position is None else (Ellipsis, position, slice(None))
        view = acts[where]
        for op, (keys, amounts) in ops.items():
            amounts = amounts.to(acts.dtype).to(acts.device)
            if op == "set":
                view[..., keys] = amounts
            elif op == "scale":
                view[..., keys] = view[..., keys] * amounts
            else:
                view[..., keys] = view[..., keys] + amounts
        return acts

    return fn


@contextmanager
def intervene(
    model: Model, changes: Mapping[int, Mapping[int, Change]], *, position: int | None = None
) -> Iterator[Model]:
    """Change FFN key coefficients inside a ``with`` block.

    Args:
        model: a loaded model.
        changes: ``{layer: {key: value | ("scale", s) | ("add", x)}}``.
        position: only this token position (negative counts from the end of the
            padded batch); None changes every position.

    Raises:
        WorkbenchError: a layer or key index out of range, or a malformed change.

    Example:
        >>> with intervene(model, {5: {12: ("scale", 0.0)}}):
        ...     out = model.logits(model.tokens("Hello"))
    """
    plan = _normalise(model, changes)
    hooks = [(model.roles.hook("ffn_keys", layer), _hook_fn(ops, position)) for layer, ops in plan.items()]
    # The bridge's context removes exactly the hooks it added, in a finally block.
    with hooked(model, hooks):
        yield model


def suppress(model: Model, neurons: Mapping[int, Sequence[int]] | Sequence[tuple[int, int]], *,
             position: int | None = None):
    """``intervene`` that sets the given keys' coefficients to zero.

    ``neurons`` is ``{layer: [keys]}`` or a list of ``(layer, key)`` pairs.
    """
    return intervene(model, _as_changes(neurons, 0.0), position=position)


def amplify(model: Model, neurons: Mapping[int, Sequence[int]] | Sequence[tuple[int, int]], *,
            factor: float = 2.0, position: int | None = None):
    """``intervene`` that multiplies the given keys' coefficients by ``factor``."""
    return intervene(model, _as_changes(neurons, ("scale", factor)), position=position)


def _as_changes(neurons, change: Change) -> dict[int, dict[int, Change]]:
    if isinstance(neurons, Mapping):
        return {layer: {key: change for key in keys} for layer, keys in neurons.items()}
    out: dict[int, dict[int, Change]] = {}
    for pair in neurons:
        try:
            layer, key = pair
        except (TypeError, ValueError):
            raise WorkbenchError(f"neurons must be (layer, key) pairs, got {pair!r}") from None
        out.setdefault(layer, {})[key] = change
    return out
