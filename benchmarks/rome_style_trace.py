"""The trace baseline done as ROME's reference code does it: plain Hugging Face, plain hooks.

Per (kind, token, layer) cell: one batched forward of the clean prompt plus N
noisy copies through an unwrapped Hugging Face model (its own attention
kernels, no TransformerLens bridge), noise added by a forward hook on the
embedding, the clean row's state copied into the noisy rows by forward hooks on
module outputs, logits at every position as ``model(**inputs).logits``, and
p(answer) as the mean over the noisy rows of the last position's softmax.
Written for this benchmark (the timing baseline of ``benchmarks/trace.py``), not
used by the library; it follows ROME's procedure, not its code.

Module outputs restored per kind (what the residual stream receives):
``resid`` the decoder layer's output; ``mlp``/``attn`` the FFN / attention
output after the family's post-norm where it has one (Gemma), else the module's
own output (Llama).
"""

from __future__ import annotations

import torch

from workbench.locate.cells import window_layers


def load_plain(name: str):
    """The converted model as a plain ``AutoModelForCausalLM`` in float32 (a second copy)."""
    from transformers import AutoModelForCausalLM

    from workbench.core.loading import converted_dir

    return AutoModelForCausalLM.from_pretrained(converted_dir(name), dtype=torch.float32).eval()


def _outputs(layer, kind: str):
    if kind == "resid":
        return layer
    gemma_style = hasattr(layer, "pre_feedforward_layernorm")
    if kind == "mlp":
        return layer.post_feedforward_layernorm if gemma_style else layer.mlp
    return layer.post_attention_layernorm if gemma_style else layer.self_attn


def trace_cells(model, input_ids: torch.Tensor, begin: int, end: int, noise: torch.Tensor, answer_id: int,
                cells: list[tuple[str, int, int]], window: int = 10) -> dict[tuple[str, int, int], float]:
    """p(answer) after restoring each ``(kind, token, layer)`` cell; ``noise`` is ``[N, end-begin, d_model]``
    added to the subject's embeddings (as they enter block 0)."""
    layers = model.model.layers
    n_layers = len(layers)
    batch = input_ids.repeat(noise.shape[0] + 1, 1)

    def add_noise(module, args, out):
        out = out.clone()
        out[1:, begin:end] += noise.to(out.dtype)
        return out

    def restore(t: int):
        def fn(module, args, out):
            h = out[0] if isinstance(out, tuple) else out
            h[1:, t] = h[0, t]
            return out
        return fn

    got = {}
    embed_hook = model.model.embed_tokens.register_forward_hook(add_noise)
    try:
        for kind, t, layer in cells:
            if kind == "resid":
                mods = [layers[layer]]
            else:
                lo, hi = window_layers(layer, window, n_layers)
                mods = [_outputs(layers[j], kind) for j in range(lo, hi)]
            handles = [m.register_forward_hook(restore(t)) for m in mods]
            try:
                with torch.no_grad():
                    logits = model(input_ids=batch).logits
                got[(kind, t, layer)] = float(torch.softmax(logits[1:, -1].float(), dim=-1)[:, answer_id].mean())
            finally:
                for h in handles:
                    h.remove()
    finally:
        embed_hook.remove()
    return got
