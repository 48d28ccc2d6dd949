"""The FFN as a key-value memory: which sub-updates an FFN layer writes, and what they mean.

At layer ``l`` and position ``t`` the FFN output is a sum of *sub-updates*
``m_i * v_i`` (Geva et al. 2021, 2022): ``m_i`` is key ``i``'s activation
coefficient (``roles.hook("ffn_keys", l)``), ``v_i`` row ``i`` of the output
("value") matrix (``roles.value_vectors``). A sub-update's weight is
``|m_i| * ||v_i||``.

Reading a value vector as tokens: Gemma normalises the FFN output before the
residual add, and an RMS norm scales a whole vector by one number, so the
direction ``v_i`` joins the residual as ``gain ⊙ v_i`` (``roles.value_direction_gain``;
no gain for families without a post-FFN norm). That direction is then read
like any residual vector: through the final norm *and* the unembedding
(:meth:`~workbench.core.model.Model.unembed`). For an RMS final norm this equals
projecting ``g_final ⊙ gain ⊙ v_i`` through ``W_U`` up to a positive factor, so
token rankings do not depend on ``||v_i||``; the scores are the logits of the
normalised direction. A negative coefficient writes ``-v_i``: the tokens a
sub-update *promotes* are then the ones its value vector demotes, and the
report says so per sub-update (``promotes``/``demotes`` are for ``m_i * v_i``).

Example:
    >>> r = memories(model, "The Eiffel Tower is located in the city of", layer=10)
    >>> r.reconstruction_error < 1e-5   # the sub-updates add up to the FFN output
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench import checks
from workbench.errors import WorkbenchError
from workbench.locate.ffn import key_coefficients, value_directions, value_logits
from workbench.locate.lens import TokenScore, check_prompt, first_token_id, position_index, residuals, top_tokens
from workbench.core.model import Model
from workbench.results import Result


@dataclass
class SubUpdate(Result):
    """One term ``m_i v_i`` of an FFN output.

    Attributes:
        key: the key (neuron) index ``i``.
        coefficient: ``m_i`` at the chosen position.
        value_norm: ``||v_i||``.
        weight: ``|m_i| * ||v_i||``.
        promotes / demotes: tokens the signed sub-update ``m_i v_i`` pushes up / down.
    """

    key: int
    coefficient: float
    value_norm: float
    weight: float
    promotes: list[TokenScore] = field(default_factory=list)
    demotes: list[TokenScore] = field(default_factory=list)


@dataclass
class MemoryReport(Result):
    """What :func:`memories` returns.

    Attributes:
        token: the token at ``position``.
        ffn_norm: ``||sum_i m_i v_i||`` (before any post-FFN norm).
        total_weight: ``sum_i |m_i| ||v_i||`` over all keys.
        top_weight_share: share of ``total_weight`` in the listed sub-updates.
        reconstruction_error: ``max |sum_i m_i v_i - ffn_out|`` (a self-check, ~1e-6).
        ffn_promotes: tokens the whole FFN update (as added to the residual) promotes.
        lens_before / lens_after: logit-lens top tokens (probabilities) of the
            residual entering and leaving the layer.
    """

    model: str
    prompt: str
    layer: int
    position: int
    token: str
    ffn_norm: float
    total_weight: float
    top_weight_share: float
    reconstruction_error: float
    sub_updates: list[SubUpdate]
    ffn_promotes: list[TokenScore]
    ffn_demotes: list[TokenScore]
    lens_before: list[TokenScore]
    lens_after: list[TokenScore]

    def to_pandas(self):
        """One row per listed sub-update."""
        import pandas as pd

        return pd.DataFrame([
            {"key": u.key, "coefficient": u.coefficient, "value_norm": u.value_norm, "weight": u.weight,
             "promotes": [t.token for t in u.promotes], "demotes": [t.token for t in u.demotes]}
            for u in self.sub_updates
        ])


def sub_updates(
    model: Model, prompt: str, *, layer: int, position: int = -1
) -> Float[Tensor, "d_mlp d_model"]:
    """All sub-updates ``m_i v_i`` at one layer and position; they sum to the FFN output.

    Example:
        >>> sub_updates(model, "Hello world", layer=0).sum(0).shape
        torch.Size([640])
    """
    layer = model.layer_index(layer)
    tokens = check_prompt(model, prompt)
    position = position_index(tokens.shape[1], position)
    m = key_coefficients(model, tokens, [layer])[layer][position]
    return m[:, None] * model.roles.value_vectors(model.bridge, layer).detach()


def memories(model: Model, prompt: str, *, layer: int, position: int = -1, top_k: int = 20,
             tokens_per_key: int = 8) -> MemoryReport:
    """Decompose the FFN update at ``layer``/``position`` into its largest sub-updates.

    Args:
        model: a loaded model.
        prompt: the text; ``position`` indexes its tokens (BOS included).
        layer: the block (negative counts from the end).
        position: the token position (default: last).
        top_k: sub-updates to list, by weight ``|m_i| ||v_i||``.
        tokens_per_key: tokens listed per sub-update and for the whole update.

    Returns:
        A :class:`MemoryReport`.

    Raises:
        WorkbenchError: layer or position out of range, empty prompt, ``top_k < 1``.

    Example:
        >>> r = memories(model, "The Eiffel Tower is located in the city of", layer=-3, top_k=5)
        >>> r.lens_after[0].token   # Gemma 3 270M
        ' Paris'
    """
    layer = model.layer_index(layer)
    top_k = checks.top_k(top_k)
    checks.whole("tokens_per_key", tokens_per_key, low=0, high=checks.MAX_TOP_K)
    tokens = check_prompt(model, prompt)
    position = position_index(tokens.shape[1], position)
    roles = model.roles
    names = [roles.hook("ffn_keys", layer), roles.hook("ffn_out", layer), roles.hook("mlp", layer),
             roles.hook("resid_pre", layer), roles.hook("resid", layer)]
    acts = {name: act[position] for name, act in residuals(model, tokens, names).items()}
    m, ffn_out, mlp_out, before, after = (acts[n] for n in names)

    values = roles.value_vectors(model.bridge, layer).detach()
    value_norms = values.norm(dim=-1)
    weights = m.abs() * value_norms
    # float64 so the check measures the model's rounding, not ours.
    recon = (m.double()[:, None] * values.double()).sum(0)
    error = float((recon - ffn_out.double()).abs().max())
    k = min(top_k, model.d_mlp)
    top_w, top_keys = weights.topk(k)
    with torch.no_grad():
        # Sign matters: m_i < 0 writes -v_i, flipping what the sub-update promotes.
        signed = value_logits(model, layer, top_keys) * m[top_keys].sign()[:, None]
        ffn_logits = model.unembed(mlp_out)
        lens_logits = model.unembed(torch.stack([before, after])).float().softmax(-1)
    updates = [
        SubUpdate(key=int(i), coefficient=float(m[i]), value_norm=float(value_norms[i]), weight=float(w),
                  promotes=top_tokens(model, row, tokens_per_key),
                  demotes=top_tokens(model, row, tokens_per_key, largest=False))
        for i, w, row in zip(top_keys.tolist(), top_w, signed)
    ]
    total = float(weights.sum())
    return MemoryReport(
        model=model.name, prompt=prompt, layer=layer, position=position,
        token=model.str_tokens([int(tokens[0, position])])[0],
        ffn_norm=float(ffn_out.norm()), total_weight=total,
        top_weight_share=float(top_w.sum()) / total if total > 0 else 0.0,
        reconstruction_error=error, sub_updates=updates,
        ffn_promotes=top_tokens(model, ffn_logits, tokens_per_key),
        ffn_demotes=top_tokens(model, ffn_logits, tokens_per_key, largest=False),
        lens_before=top_tokens(model, lens_logits[0], tokens_per_key),
        lens_after=top_tokens(model, lens_logits[1], tokens_per_key),
    )


@dataclass
class KeyMatch(Result):
    """A key whose value vector promotes a token: ``score`` is the token's logit in
    the value direction's projection, ``rank`` the token's rank there (0 = top)."""

    layer: int
    key: int
    score: float
    rank: int
    promotes: list[TokenScore] = field(default_factory=list)


@dataclass
class KeySearch(Result):
    """What :func:`find_keys` returns, best first."""

    model: str
    token: str
    token_id: int
    keys: list[KeyMatch]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([{"layer": k.layer, "key": k.key, "score": k.score, "rank": k.rank,
                              "promotes": [t.token for t in k.promotes]} for k in self.keys])


def find_keys(model: Model, token: str, *, layers: list[int] | None = None, top_k: int = 20,
              tokens_per_key: int = 8) -> KeySearch:
    """Keys whose value vectors most promote ``token``, across layers.

    ``token`` is read as a word after a space (``"Paris"`` → ``" Paris"``); a
    multi-token word is searched by its first token. Only the token's own
    unembedding row is needed per key, so all layers are cheap even for a
    262k-token vocabulary.

    Example:
        >>> [(k.layer, k.key) for k in find_keys(model, "Paris", top_k=3).keys]   # doctest: +SKIP
    """
    token_id = first_token_id(model, "x", token)
    layers = list(range(model.n_layers)) if layers is None else [model.layer_index(l) for l in layers]
    if not layers:
        raise WorkbenchError("no layers to search")
    row = model.hf_model.get_output_embeddings().weight[token_id].detach()
    scores = []
    with torch.no_grad():
        for layer in layers:
            # Softcap (if any) is monotone, so it cannot change the ranking: skip it.
            scores.append(model.bridge.ln_final(value_directions(model, layer)) @ row)
    flat = torch.stack(scores)  # [layers, d_mlp]
    k = min(top_k, flat.numel())
    best, where = flat.flatten().topk(k)
    matches = []
    for score, idx in zip(best.tolist(), where.tolist()):
        layer, key = layers[idx // model.d_mlp], idx % model.d_mlp
        logits = value_logits(model, layer, [key])[0]
        matches.append(KeyMatch(layer=layer, key=key, score=score,
                                rank=int((logits > logits[token_id]).sum()),
                                promotes=top_tokens(model, logits, tokens_per_key)))
    return KeySearch(model=model.name, token=model.tokenizer.decode([token_id]), token_id=token_id, keys=matches)
