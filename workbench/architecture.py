"""Map a model family to the roles the workbench uses.

This is the only module that knows model families. Everything else asks for a
role: the hook that carries the residual stream after block ``l``, the FFN keys
(activation coefficients), the matrix whose rows are the FFN value vectors,
the norm (if any) the FFN output passes through before joining the residual,
the final norm and the unembedding.

TransformerLens's ``TransformerBridge`` already gives every family the same hook
names; what differs is how the weights are laid out (``nn.Linear`` stores
``[out, in]``, GPT-2's ``Conv1D`` stores ``[in, out]``) and whether the block
normalises the FFN output (Gemma 2/3 do, "sandwich" norms).

Adding a family: add an entry to :data:`FAMILIES` (see docs/howto-add-a-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Roles:
    """Hook names and weight accessors for one architecture family.

    Hook names are templates with ``{layer}``.

    Example:
        >>> roles = FAMILIES["llama"]
        >>> roles.hook("ffn_keys", 3)
        'blocks.3.mlp.hook_post'
    """

    family: str
    #: Name of the block submodule that normalises the FFN output before it is
    #: added to the residual stream (Gemma's post-feedforward norm), or None.
    ffn_post_norm: str | None = None
    #: Name of the block submodule normalising the attention output, or None.
    attn_post_norm: str | None = None
    #: True when the FFN output weight is stored ``[d_mlp, d_model]`` (GPT-2 Conv1D).
    value_weight_rows_are_values: bool = False

    HOOKS = {
        "embed": "hook_embed",  # token embeddings as they enter block 0 (scaled, for Gemma)
        "resid_pre": "blocks.{layer}.hook_resid_pre",
        "resid": "blocks.{layer}.hook_resid_post",  # block output
        "ffn_keys": "blocks.{layer}.mlp.hook_post",  # coefficients m_i, the input to W_out
        "ffn_out": "blocks.{layer}.mlp.hook_out",  # sum_i m_i v_i (before any post-norm)
        "mlp": "blocks.{layer}.hook_mlp_out",  # what the FFN adds to the residual
        "attn": "blocks.{layer}.hook_attn_out",  # what attention adds to the residual
    }

    def hook(self, role: str, layer: int | None = None) -> str:
        """The TransformerLens hook name of ``role`` at ``layer``."""
        template = self.HOOKS[role]
        return template.format(layer=layer) if "{layer}" in template else template

    def value_weight(self, bridge, layer: int) -> torch.nn.Parameter:
        """The FFN output ("value") parameter of block ``layer`` as stored."""
        return bridge.blocks[layer].mlp.out.weight

    def value_vectors(self, bridge, layer: int) -> Tensor:
        """A ``[d_mlp, d_model]`` view whose row i is value vector v_i (shares storage)."""
        weight = self.value_weight(bridge, layer)
        return weight if self.value_weight_rows_are_values else weight.T

    def ffn_post_norm_module(self, bridge, layer: int):
        """The module applied to the FFN output before the residual add, or None."""
        if self.ffn_post_norm is None:
            return None
        return getattr(bridge.blocks[layer], self.ffn_post_norm)

    def ffn_to_residual(self, bridge, layer: int, ffn_out: Tensor) -> Tensor:
        """Map raw FFN output (``sum_i m_i v_i``) to what it adds to the residual."""
        norm = self.ffn_post_norm_module(bridge, layer)
        return ffn_out if norm is None else norm(ffn_out)

    def value_direction_gain(self, bridge, layer: int) -> Tensor | None:
        """Elementwise gain the post-FFN norm applies to a direction, or None.

        An RMS norm rescales a whole vector by one number, so a single value
        vector's *direction* in the residual is ``gain * v_i``. Used when reading
        value vectors through the unembedding.
        """
        norm = self.ffn_post_norm_module(bridge, layer)
        if norm is None:
            return None
        # rms(ones) == 1, so the norm of a ones vector is exactly its gain
        # (whatever the family's convention, e.g. Gemma's 1 + weight).
        ones = torch.ones(bridge.cfg.d_model, dtype=norm.weight.dtype, device=norm.weight.device)
        with torch.no_grad():
            return norm(ones)


FAMILIES: dict[str, Roles] = {
    "gpt2": Roles("gpt2", value_weight_rows_are_values=True),
    "gptj": Roles("gptj"),
    "gpt_neox": Roles("gpt_neox"),
    "llama": Roles("llama"),
    "mistral": Roles("mistral"),
    "qwen2": Roles("qwen2"),
    "gemma": Roles("gemma"),
    "gemma2": Roles("gemma2", ffn_post_norm="ln2_post", attn_post_norm="ln1_post"),
    "gemma3": Roles("gemma3", ffn_post_norm="ln2_post", attn_post_norm="ln1_post"),
    "gemma3_text": Roles("gemma3_text", ffn_post_norm="ln2_post", attn_post_norm="ln1_post"),
}


def roles_for(model_type: str) -> Roles:
    """The roles for a Hugging Face ``config.model_type``.

    Raises:
        WorkbenchError: for a family the workbench has no role map for.
    """
    from workbench.errors import WorkbenchError

    if model_type not in FAMILIES:
        raise WorkbenchError(
            f"no role map for model family {model_type!r}; known families: "
            f"{', '.join(sorted(FAMILIES))} (add one in workbench/architecture.py)"
        )
    return FAMILIES[model_type]


def tiny_config(family: str, vocab_size: int):
    """A small randomly-initialisable Hugging Face config of ``family`` for fast tests."""
    if family == "gemma3":
        from transformers.models.gemma3 import Gemma3TextConfig

        return Gemma3TextConfig(
            num_hidden_layers=4, hidden_size=64, intermediate_size=256, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, vocab_size=vocab_size, max_position_embeddings=512,
            layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
            sliding_window=64, architectures=["Gemma3ForCausalLM"], pad_token_id=0, bos_token_id=2,
            eos_token_id=1,
        )
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            num_hidden_layers=4, hidden_size=64, intermediate_size=256, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
            architectures=["LlamaForCausalLM"], tie_word_embeddings=True,
        )
    raise ValueError(f"no tiny config for family {family!r}")
