"""The one door to activations: read hook points in one forward pass, or run one with hooks on.

* :func:`capture` — the activations at named TransformerLens hook points
  (``blocks.{l}.mlp.hook_post``, ``blocks.{l}.hook_resid_post``, ``hook_embed``, …) in one
  forward pass; with ``stop=True`` (the default) the pass ends as soon as every site has
  been read (:class:`~workbench.core.model.StopForward`), so the blocks above the highest site
  are never run. ``positions`` picks one position per row.
* :func:`hooked` — a forward pass with hooks on (patching, ablations, virtual updates);
  the hooks are removed again however the block is left.
* :func:`virtual_update_hooks` — hooks that make the model compute as if ``W_out`` of some
  layers had been changed, without writing a weight.

The idea is that of ROME's ``TraceDict(..., stop=True)`` and TransformerLens's
``run_with_cache(names_filter=..., stop_at_layer=...)``; this one reads through the
bridge's hook points and the Hugging Face base model's forward (no logits are computed).

Example:
    >>> got = capture(model, "The Eiffel Tower is in", ["blocks.1.hook_resid_post"])   # doctest: +SKIP
    >>> got["blocks.1.hook_resid_post"].shape                                          # doctest: +SKIP
    torch.Size([1, 7, 64])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.core.model import StopForward

if TYPE_CHECKING:
    from workbench.core.model import Model

#: A forward hook as the bridge takes it: (hook point name, fn(acts, hook) -> acts | None).
Hook = tuple[str, Callable]


def _as_ids(model: Model, tokens_or_ids) -> Tensor:
    """``[batch, pos]`` token ids on the model's device from a prompt, a list of ids or a tensor."""
    if isinstance(tokens_or_ids, str):
        return model.tokens(tokens_or_ids)
    ids = tokens_or_ids if isinstance(tokens_or_ids, Tensor) else torch.tensor(tokens_or_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    return ids.to(model.device)


@contextlib.contextmanager
def hooked(model: Model, hooks: Sequence[Hook] = ()) -> Iterator[Model]:
    """The model with ``hooks`` on (in order) for the ``with`` block; removed however it is left.

    Example:
        >>> with torch.no_grad(), hooked(model, [("blocks.0.hook_resid_post", zero)]):  # doctest: +SKIP
        ...     logits = model.bridge(ids)
    """
    with model.bridge.hooks(fwd_hooks=list(hooks)):
        yield model


def capture(
    model: Model,
    tokens_or_ids,
    sites: Sequence[str],
    *,
    mask: Tensor | None = None,
    positions: int | Sequence[int] | Tensor | None = None,
    stop: bool = True,
    extra_hooks: Sequence[Hook] = (),
) -> dict[str, Tensor]:
    """The activations at ``sites`` (hook point names) in one forward pass, without gradients.

    Args:
        model: a loaded model.
        tokens_or_ids: a prompt (read with BOS), a list of token ids, or a ``[pos]`` or
            ``[batch, pos]`` tensor of them.
        sites: the hook point names to read; each is keyed by the name asked for (an
            aliased hook point reports its canonical name).
        mask: the attention mask for padded rows (``[batch, pos]``).
        positions: one position for every row (an int) or one per row; the result is then
            ``[batch, d]`` instead of ``[batch, pos, d]``.
        stop: end the pass once every site has been read (the blocks above are not run).
        extra_hooks: hooks to have on during the pass, before the reading ones at the same
            point (so a site reads what they make of it: e.g. :func:`virtual_update_hooks`).

    Returns:
        ``{site: activations}``, the tensors as the forward pass made them (not copied).

    Example:
        >>> keys = capture(model, ids, [model.roles.hook("ffn_keys", 3)], mask=mask, positions=last)  # doctest: +SKIP
    """
    names = list(dict.fromkeys(sites))
    got: dict[str, Tensor] = {}

    def reader(name: str):
        def read(acts, hook=None):
            got[name] = acts
            if stop and len(got) == len(names):
                # Everything asked for is in hand; the blocks above cannot change it.
                raise StopForward
        return read

    ids = _as_ids(model, tokens_or_ids)
    with torch.no_grad(), hooked(model, [*extra_hooks, *((n, reader(n)) for n in names)]):
        model.run_for_hooks(ids, mask)
    if positions is None:
        return got
    return {n: at_positions(acts, positions) for n, acts in got.items()}


def at_positions(acts: Tensor, positions: int | Sequence[int] | Tensor) -> Tensor:
    """``acts[i, positions[i]]`` for every row i of ``[batch, pos, ...]`` (an int: that position in every row)."""
    if isinstance(positions, int):
        return acts[:, positions]
    pos = positions if isinstance(positions, Tensor) else torch.tensor(list(positions))
    return acts[torch.arange(len(pos)), pos.to(acts.device)]


def virtual_update_hooks(model: Model, updates: dict[int, Tensor]) -> list[Hook]:
    """Hooks that make the model behave as if ``W_l += updates[l]`` (``[d_model, d_mlp]``).

    Reading the key at ``ffn_keys`` and adding ``ΔW k`` at ``ffn_out`` is exactly
    a weight change, without touching the weights (so nothing can be left half-edited).
    """
    hooks = []
    for layer, dW in updates.items():
        store: dict[str, Tensor] = {}

        def keep(acts, hook=None, store=store):
            store["k"] = acts

        def add(out, hook=None, store=store, dW=dW):
            return out + (store["k"].to(dW.dtype) @ dW.T).to(out.dtype)

        hooks.append((model.roles.hook("ffn_keys", layer), keep))
        hooks.append((model.roles.hook("ffn_out", layer), add))
    return hooks


class _Replay(torch.nn.Module):
    """Stands in for a decoder block whose output is known: returns it without computing."""

    def __init__(self, original: torch.nn.Module, output, shape: tuple[int, ...]) -> None:
        super().__init__()
        object.__setattr__(self, "_original", original)  # not a submodule: no second registration
        self._output, self._shape = output, shape

    def forward(self, hidden_states, *args, **kwargs):
        if tuple(hidden_states.shape) != self._shape:
            raise RuntimeError("replayed blocks ran on other tokens than they were recorded on")
        return self._output if self._output is not None else hidden_states

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_original"), name)  # attention_type and the like


@contextlib.contextmanager
def replay_below(model: Model, layer: int, tokens: Tensor, attention_mask: Tensor | None = None) -> Iterator[None]:
    """Within the block, forward passes on ``tokens`` compute only blocks ``layer`` and up:
    the blocks below return what one recorded pass gave (bitwise the same hidden states).

    For loops that run the same tokens many times while only block ``layer`` and above
    change (WISE's side-memory training: 70 steps on one batch). Any other tokens in the
    block raise a RuntimeError rather than give a wrong answer.

    Example:
        >>> with replay_below(model, 15, ids, mask):            # doctest: +SKIP
        ...     hidden = model.hidden(ids, mask)                 # blocks 15-17 only
    """
    layers = model.hf_model.base_model.layers
    if layer <= 0:
        yield
        return
    got: dict = {}

    def keep(module, args, output):
        got["out"] = output
        raise StopForward

    h = layers[layer - 1].register_forward_hook(keep)
    try:
        with torch.no_grad():
            model.run_for_hooks(tokens, attention_mask)
    finally:
        h.remove()
    originals = [layers[i] for i in range(layer)]
    out = got["out"]
    hidden = out[0] if isinstance(out, tuple) else out
    shape = (tokens.shape[0], tokens.shape[1], hidden.shape[-1])
    try:
        for i, original in enumerate(originals):
            layers[i] = _Replay(original, out if i == layer - 1 else None, shape)
        yield
    finally:
        for i, original in enumerate(originals):
            layers[i] = original
