"""Map a model family to the roles the workbench uses.

This is the only module that knows model families. Everything else asks for a
role: the hook that carries the residual stream after block ``l``, the FFN keys
(activation coefficients), the matrix whose rows are the FFN value vectors,
the norm (if any) the FFN output passes through before joining the residual,
the final norm and the unembedding.

TransformerLens's ``TransformerBridge`` already gives every family the same hook
names; what differs is how the weights are laid out (``nn.Linear`` stores
``[out, in]``, GPT-2's ``Conv1D`` stores ``[in, out]``) and whether the block
normalises the FFN output (Gemma 2/3 and OLMo 2 do, "sandwich" norms).

Any family the bridge supports loads without an entry: :func:`roles_for` gives it
the default roles, reading the two layout facts off the booted bridge (the FFN
output weight's shape, and whether the block has a ``ln2_post`` norm).
:func:`check_roles` then makes sure every role is there and names the first one
that is not. An entry in :data:`FAMILIES` is only needed where that reading would
be wrong (see docs/howto-add-a-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.errors import WorkbenchError


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


def roles_for(model_type: str, bridge=None) -> Roles:
    """The roles for a Hugging Face ``config.model_type``: its entry, or the default roles.

    A family without an entry gets the default hooks and weight accessors, with the
    layout read off ``bridge`` (a booted ``TransformerBridge``): the FFN output weight
    stored ``[d_mlp, d_model]`` means its rows are the value vectors (GPT-2's
    ``Conv1D``), and a block with a ``ln2_post`` (``ln1_post``) submodule normalises
    the FFN (attention) output before the residual add. Without a bridge the defaults
    assume ``nn.Linear`` storage and no post-norms.

    Example:
        >>> roles_for("llama").family, roles_for("olmo").ffn_post_norm
        ('llama', None)
    """
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if bridge is None:
        return Roles(model_type)
    block = bridge.blocks[0]
    weight = getattr(getattr(getattr(block, "mlp", None), "out", None), "weight", None)
    d_model, d_mlp = int(bridge.cfg.d_model), int(bridge.cfg.d_mlp)
    rows_are_values = weight is not None and d_model != d_mlp and tuple(weight.shape) == (d_mlp, d_model)
    return Roles(
        model_type,
        ffn_post_norm="ln2_post" if hasattr(block, "ln2_post") else None,
        attn_post_norm="ln1_post" if hasattr(block, "ln1_post") else None,
        value_weight_rows_are_values=rows_are_values,
    )


def check_roles(bridge, roles: Roles) -> None:
    """Make sure every role the workbench uses exists on ``bridge``, at every layer.

    Raises:
        WorkbenchError: one line naming the first missing role (a hook, the FFN
            output weight of the expected shape, or a post-norm module).
    """
    hooks = getattr(bridge, "hook_dict", {})
    family = roles.family
    fix = "add an entry for it to FAMILIES in workbench/core/architecture.py (docs/howto-add-a-model.md)"
    d_model, d_mlp = int(bridge.cfg.d_model), int(bridge.cfg.d_mlp)
    expected = (d_mlp, d_model) if roles.value_weight_rows_are_values else (d_model, d_mlp)
    for layer in range(int(bridge.cfg.n_layers)):
        for role in Roles.HOOKS:
            name = roles.hook(role, layer)
            if name not in hooks:
                raise WorkbenchError(f"model family {family!r} has no {role!r} role: the bridge has no hook {name!r}; {fix}")
        try:
            weight = roles.value_weight(bridge, layer)
        except AttributeError:
            raise WorkbenchError(
                f"model family {family!r} has no FFN output weight at blocks.{layer}.mlp.out (the 'FFN values' role); {fix}"
            ) from None
        if tuple(weight.shape) != expected:
            raise WorkbenchError(
                f"model family {family!r}: the FFN output weight of block {layer} has shape {list(weight.shape)}, "
                f"expected {list(expected)} ([d_model, d_mlp] for nn.Linear storage, [d_mlp, d_model] for Conv1D); {fix}"
            )
        for what, norm in (("FFN", roles.ffn_post_norm), ("attention", roles.attn_post_norm)):
            if norm is not None and not hasattr(bridge.blocks[layer], norm):
                raise WorkbenchError(f"model family {family!r}: block {layer} has no {what} post-norm {norm!r}; {fix}")


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
    # Two families without an entry in FAMILIES: they load on the default roles.
    if family == "olmo":
        from transformers import OlmoConfig

        return OlmoConfig(
            num_hidden_layers=4, hidden_size=64, intermediate_size=256, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
            architectures=["OlmoForCausalLM"], tie_word_embeddings=False,
        )
    if family == "phi3":
        from transformers import Phi3Config

        # Phi-3 fuses the gate and up projections into one matrix; the bridge splits them.
        return Phi3Config(
            num_hidden_layers=4, hidden_size=64, intermediate_size=256, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
            architectures=["Phi3ForCausalLM"], pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    raise ValueError(f"no tiny config for family {family!r}")
