"""Running a model's blocks from any layer, and reading p(answer) from final hidden states.

The fast sweep (:mod:`workbench.locate.sweep`) and patching restart the forward
pass at the layer a restored state enters; :class:`BlockRunner` makes that
possible for any family by replaying the arguments the model passed its blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.model import Model

_DROP_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past", "use_cache")


class BlockRunner:
    """Run a model's blocks from any layer on a batch of same-length sequences.

    On construction it runs the clean prompt once, capturing the arguments each
    block receives besides its input (attention masks, rotary tables, position
    ids — so any family's forward is followed exactly), the residual stream
    entering every block, and the per-layer ``mlp`` and ``attn`` outputs.

    Attributes:
        resid: ``resid[s]`` is the clean residual ``[1, pos, d_model]`` entering block
            ``s``; ``resid[n_layers]`` is the last block's output.
        acts: ``{"mlp": [...], "attn": [...]}`` clean per-layer outputs ``[1, pos, d_model]``.
    """

    def __init__(self, model: Model, tokens: Int[Tensor, "1 pos"]) -> None:
        self.model = model
        self.tokens = tokens
        bridge, roles, n = model.bridge, model.roles, model.n_layers
        self.block_args: list[tuple] = [None] * n  # type: ignore[list-item]
        self.block_kwargs: list[dict] = [None] * n  # type: ignore[list-item]
        self.resid: list[Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        self.acts: dict[str, list[Tensor]] = {k: [None] * n for k in ("mlp", "attn")}  # type: ignore[misc]

        def pre_hook(layer: int):
            def fn(module, args, kwargs):
                kwargs = dict(kwargs)
                hidden = args[0] if args else kwargs.pop("hidden_states")
                self.resid[layer] = hidden.detach().clone()
                self.block_args[layer] = tuple(args[1:])
                # No KV cache: each restored run is a fresh pass over the whole prompt.
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
            with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
                self.model.hf_model.base_model(input_ids=tokens, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        if any(r is None for r in self.resid):
            raise WorkbenchError(f"could not follow {model.name}'s blocks: tracing needs a standard block stack")

    def run(
        self,
        start: int,
        x: Float[Tensor, "batch pos d_model"],
        hooks: list[tuple[str, Callable]] | None = None,
        *,
        keep: bool = False,
    ) -> Float[Tensor, "batch d_model"] | tuple[Tensor, list[Tensor]]:
        """Blocks ``start..n_layers-1`` on ``x``, then the final norm at the last position.

        With ``keep=True`` also returns the residual entering every block from
        ``start`` on (and the final block output).
        """
        kept = [x] if keep else []
        with torch.no_grad(), self.model.bridge.hooks(fwd_hooks=hooks or []):
            for layer in range(start, self.model.n_layers):
                out = self.model.bridge.blocks[layer](x, *self.block_args[layer], **self.block_kwargs[layer])
                x = out[0] if isinstance(out, tuple) else out
                if keep:
                    kept.append(x)
            hidden = self.model.bridge.ln_final(x[:, -1])
        return (hidden, kept) if keep else hidden


def answer_probs(
    model: Model, hidden: Float[Tensor, "batch d_model"], answer_id: int, *, chunk: int = 128
) -> Float[Tensor, "batch"]:
    """p(answer) from final normed hidden states, unembedding a few rows at a time
    (a 262k-entry vocabulary makes one full batch of logits hundreds of MB)."""
    out = []
    with torch.no_grad():
        for i in range(0, hidden.shape[0], chunk):
            logits = model.logits_from_hidden(hidden[i : i + chunk]).float()
            out.append((logits[:, answer_id] - logits.logsumexp(-1)).exp())
    return torch.cat(out)
