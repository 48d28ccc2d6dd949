"""Running a model's blocks from any layer and any position, and reading p(answer) from final hidden states.

The fast sweep (:mod:`workbench.locate.sweep`) and patching restart the forward
pass at the layer a restored state enters, and only for the positions it can
change; :class:`BlockRunner` makes that possible for any family by replaying the
arguments the model passed its blocks, cut to those positions, with the keys and
values of the positions before them taken from a stored run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.activations import hooked
from workbench.errors import WorkbenchError
from workbench.core.model import Model

_DROP_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past", "use_cache")


class _PrefixCache:
    """Stands in for a Hugging Face cache during one call of the block stack.

    Attention hands it each layer's keys and values (after rotary embedding) through
    ``update``; it returns them with ``prefix[layer]`` — the stored keys and values of
    the positions before the ones being run — in front, and with ``record`` keeps
    what it was given. Nothing else of the cache interface is used by a block.
    """

    def __init__(self, prefix: dict[int, tuple[Tensor, Tensor]] | None = None, record: bool = False) -> None:
        self.prefix = prefix or {}
        self.record = record
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.record:
            self.kv[layer_idx] = (key, value)
        if layer_idx in self.prefix:
            pk, pv = self.prefix[layer_idx]
            key, value = torch.cat([pk, key], dim=-2), torch.cat([pv, value], dim=-2)
        return key, value


@dataclass
class States:
    """A run's states: ``resid[s]`` ``[batch, pos, d_model]`` enters block ``s``
    (``resid[n_layers]`` leaves the last), ``kv[s]`` is block ``s``'s attention
    keys and values ``[batch, kv_heads, pos, d_head]``, ``hidden`` the final normed
    state at the last position."""

    resid: list[Tensor]
    kv: list[tuple[Tensor, Tensor]]
    hidden: Tensor


class BlockRunner:
    """Run a model's blocks from any layer, on the positions from any token on.

    On construction it runs the clean prompt once, capturing the arguments each
    block receives besides its input (attention masks, rotary tables, position
    ids — so any family's forward is followed exactly), the residual stream
    entering every block, the per-layer ``mlp`` and ``attn`` outputs and the
    attention keys and values.

    Attributes:
        resid: ``resid[s]`` is the clean residual ``[1, pos, d_model]`` entering block
            ``s``; ``resid[n_layers]`` is the last block's output.
        acts: ``{"mlp": [...], "attn": [...]}`` clean per-layer outputs ``[1, pos, d_model]``.
        clean: the clean run's :class:`States` (keys and values included; computed on first use).

    Example:
        >>> runner = BlockRunner(model, model.tokens("The Eiffel Tower is in"))
        >>> noisy = runner.run(0, runner.resid[0] + 0.1, keep=True)     # a whole run, kept
        >>> # restart at block 5 for positions 3.. only, reusing positions 0-2's keys and values
        >>> h = runner.run(5, noisy.resid[5][:, 3:], first=3, prefix=noisy.kv)
    """

    def __init__(self, model: Model, tokens: Int[Tensor, "1 pos"]) -> None:
        self.model = model
        self.tokens = tokens
        bridge, roles, n = model.bridge, model.roles, model.n_layers
        self.block_args: list[tuple] = [None] * n  # type: ignore[list-item]
        self.block_kwargs: list[dict] = [None] * n  # type: ignore[list-item]
        self.resid: list[Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        self.acts: dict[str, list[Tensor]] = {k: [None] * n for k in ("mlp", "attn")}  # type: ignore[misc]
        self._cut: dict[tuple[int, int], tuple[tuple, dict]] = {}

        def pre_hook(layer: int):
            def fn(module, args, kwargs):
                kwargs = dict(kwargs)
                hidden = args[0] if args else kwargs.pop("hidden_states")
                self.resid[layer] = hidden.detach().clone()
                self.block_args[layer] = tuple(args[1:])
                # No KV cache from the model: runs here bring their own (_PrefixCache).
                self.block_kwargs[layer] = {k: v for k, v in kwargs.items() if k not in _DROP_KWARGS}
            return fn

        def saver(store: list, layer: int):
            def fn(x, hook):
                store[layer] = x.detach().clone()
                return x
            return fn

        hooks = [(roles.hook("resid", n - 1), saver(self.resid, n))]
        hooks += [(roles.hook(k, l), saver(self.acts[k], l)) for k in self.acts for l in range(n)]
        handles = [blk.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, blk in enumerate(bridge.blocks)]
        try:
            with torch.no_grad(), hooked(model, hooks):
                self.model.hf_model.base_model(input_ids=tokens, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        if any(r is None for r in self.resid):
            raise WorkbenchError(f"could not follow {model.name}'s blocks: tracing needs a standard block stack")
        self._cache_name = _cache_keyword(bridge.blocks[0])

    @functools.cached_property
    def clean(self) -> States:
        """The clean run's :class:`States`, keys and values included: one more pass of the
        blocks through our own cache, made only when asked for (patching reads the corrupt
        prompt's; a trace records its own corrupted run's)."""
        return self.run(0, self.resid[0], keep=True)

    def _arguments(self, layer: int, first: int) -> tuple[tuple, dict]:
        """Block ``layer``'s captured arguments cut to the positions from ``first`` on."""
        key = (layer, first)
        if key not in self._cut:
            n_pos = self.tokens.shape[1]
            cut = lambda v: _cut_positions(v, first, n_pos)
            self._cut[key] = (tuple(cut(a) for a in self.block_args[layer]),
                              {k: cut(v) for k, v in self.block_kwargs[layer].items()})
        return self._cut[key]

    def run(
        self,
        start: int,
        x: Float[Tensor, "batch pos d_model"],
        hooks: list[tuple[str, Callable]] | None = None,
        *,
        keep: bool = False,
        first: int = 0,
        prefix: list[tuple[Tensor, Tensor]] | None = None,
        grad: bool = False,
    ) -> Float[Tensor, "batch d_model"] | States:
        """Blocks ``start..n_layers-1`` on ``x``, then the final norm at the last position.

        Args:
            start: the first block to run.
            x: the residual entering block ``start`` at positions ``first..`` (all positions
                when ``first`` is 0).
            hooks: bridge hooks for this run (positions in them count from ``first``).
            keep: return the :class:`States` of the run instead of the final hidden state.
            first: the first position run; the positions before it are taken as they
                were in the run whose keys and values ``prefix`` holds.
            prefix: ``prefix[s]`` keys and values of block ``s`` (``[batch, kv_heads, pos, d_head]``,
                at least ``first`` positions; repeated along the batch when
                ``x`` holds several copies of its rows); needed when ``first`` > 0.
            grad: build the autograd graph (integrated gradients differentiate through
                the run with respect to a tensor a hook puts in); off, nothing is recorded.
        """
        if first and prefix is None:
            raise ValueError("running from a later position needs the keys and values of the earlier ones (prefix=)")
        n, batch = self.model.n_layers, x.shape[0]
        kept: list[Tensor] = [x] if keep else []
        kv: list = [None] * start
        with torch.set_grad_enabled(grad), hooked(self.model, hooks or []):
            for layer in range(start, n):
                before = None
                if first:
                    k, v = prefix[layer]
                    before = {self._layer_idx(layer): (_rows(k[:, :, :first], batch), _rows(v[:, :, :first], batch))}
                cache = _PrefixCache(before, record=keep)
                args, kwargs = self._arguments(layer, first)
                out = self.model.bridge.blocks[layer](x, *args, **kwargs, **{self._cache_name: cache})
                x = out[0] if isinstance(out, tuple) else out
                if keep:
                    if len(cache.kv) != 1:
                        raise WorkbenchError(f"could not follow {self.model.name}'s attention: block {layer} "
                                             "does not hand its keys and values to a cache")
                    kept.append(x)
                    kv.extend(cache.kv.values())
            hidden = self.model.bridge.ln_final(x[:, -1])
        return States(kept, kv, hidden) if keep else hidden

    def _layer_idx(self, layer: int) -> int:
        """The index the block's attention passes its cache (the HF layer index; our block number)."""
        idx = getattr(self.model.bridge.blocks[layer].attn, "_layer_idx", None)
        return layer if idx is None else int(idx)


def _rows(t: Tensor, batch: int) -> Tensor:
    """``t`` repeated along the batch to ``batch`` rows (the run's rows are blocks of the stored run's)."""
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise ValueError(f"a batch of {batch} rows is not whole copies of the {t.shape[0]} stored rows")
    return t.repeat(batch // t.shape[0], *([1] * (t.ndim - 1)))


def _cut_positions(value, first: int, n_pos: int):
    """A captured block argument restricted to positions ``first..``: masks keep all key
    columns and lose the earlier query rows; rotary tables and position ids lose the
    earlier positions. Anything without a position axis passes unchanged."""
    if not first:
        return value
    if isinstance(value, tuple):
        return tuple(_cut_positions(v, first, n_pos) for v in value)
    if not isinstance(value, Tensor):
        return value
    if value.ndim == 4 and value.shape[-2] == n_pos:  # [batch, heads, q, k] attention mask
        return value[..., first:, :]
    if value.ndim in (2, 3) and value.shape[1] == n_pos:  # position ids [b, pos], rotary [b, pos, d]
        return value[:, first:]
    if value.ndim == 1 and value.shape[0] == n_pos:  # cache_position
        return value[first:]
    return value


def _cache_keyword(block) -> str:
    """The keyword under which a block's wrapped layer takes its KV cache."""
    layer = getattr(block, "original_component", block)
    params = inspect.signature(layer.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def answer_probs(
    model: Model, hidden: Float[Tensor, "batch d_model"], answer_id: int, *, chunk: int = 256
) -> Float[Tensor, "batch"]:
    """p(answer) from final normed hidden states, unembedding a few rows at a time
    (a 262k-entry vocabulary makes one full batch of logits hundreds of MB)."""
    out = []
    with torch.no_grad():
        for i in range(0, hidden.shape[0], chunk):
            logits = model.logits_from_hidden(hidden[i : i + chunk]).float()
            out.append((logits[:, answer_id] - logits.logsumexp(-1)).exp())
    return torch.cat(out)
