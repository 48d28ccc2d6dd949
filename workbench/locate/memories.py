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

How much a sub-update pushes the answer (``answer_push``) is its *direct* logit
attribution: ``m_i v_i`` carried into the residual (through the post-FFN norm,
its scale at this token held fixed), then read through the final norm with the
scale it has on the *final* residual at this token held fixed, then dotted with
the answer's unembedding row. Holding the scales fixed makes every step linear,
so the pushes of all ``d_mlp`` sub-updates plus the output bias's (if any) add up
to the whole FFN update's direct push, and every layer's components add up to
the logit (before any soft-cap and output bias). It leaves out what later layers
do with the update; at a position other than the last it is what the sub-update
would add to the answer's logit if it were read out directly there.

Example:
    >>> r = memories(model, "The Eiffel Tower is located in the city of", layer=10)
    >>> r.reconstruction_error < 1e-5   # the sub-updates add up to the FFN output
    True
"""

from __future__ import annotations

from collections.abc import Callable
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
        answer_push: ``m_i v_i``'s direct contribution to the answer's logit (module doc).
    """

    key: int
    coefficient: float
    value_norm: float
    weight: float
    promotes: list[TokenScore] = field(default_factory=list)
    demotes: list[TokenScore] = field(default_factory=list)
    answer_push: float = 0.0


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
        answer / answer_id: the token whose logit ``answer_push`` measures: the first
            token of the answer asked for, else the model's top token after the prompt.
        ffn_answer_push: the whole FFN update's direct push on the answer's logit
            (the sum of all ``d_mlp`` sub-updates' pushes and ``bias_answer_push``).
        bias_answer_push: the push of the part of the FFN output no sub-update
            carries (the output bias of families that have one; ~0 otherwise).
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
    answer: str = ""
    answer_id: int = -1
    ffn_answer_push: float = 0.0
    bias_answer_push: float = 0.0

    def ranked(self, by: str = "weight") -> list[SubUpdate]:
        """The listed sub-updates, largest first by ``weight`` or by ``answer_push``.

        Only the listed ones (the ``top_k`` by weight) are reordered: the table and
        the chart of a panel show this one order.

        Example:
            >>> [u.key for u in report.ranked("answer_push")][:3]   # doctest: +SKIP
            [1723, 88, 402]
        """
        if by not in SORT_KEYS:
            raise WorkbenchError(f"cannot sort sub-updates by {by!r}: choose one of {', '.join(SORT_KEYS)}")
        return sorted(self.sub_updates, key=lambda u: getattr(u, by), reverse=True)

    def to_pandas(self):
        """One row per listed sub-update."""
        import pandas as pd

        return pd.DataFrame([
            {"key": u.key, "coefficient": u.coefficient, "value_norm": u.value_norm, "weight": u.weight,
             "answer_push": u.answer_push,
             "promotes": [t.token for t in u.promotes], "demotes": [t.token for t in u.demotes]}
            for u in self.sub_updates
        ])


#: What :meth:`MemoryReport.ranked` can sort by.
SORT_KEYS = ("weight", "answer_push")


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


def frozen_norm(norm: Callable[[Tensor], Tensor], x: Float[Tensor, "d_model"]) -> Callable[[Tensor], Tensor]:
    """The linear map ``c -> g ⊙ P(c) / s(x)`` a norm applies at ``x``, its scale held fixed.

    Direct logit attribution reads one component ``c`` of a residual ``x`` the way the
    norm treats the whole of ``x``: with ``x``'s scale ``s(x)``. The map is then linear,
    so the readings of all components add up to ``norm(x)`` less its bias. ``P`` is the
    identity for an RMS norm and centring for a LayerNorm. The gain and the scale are
    read off the module by probing it, so any weight convention (Gemma's ``1 + w``)
    and any ``eps`` come out right. The map returns float64.

    Example:
        >>> read = frozen_norm(model.bridge.ln_final, x)
        >>> torch.allclose(read(x).float(), model.bridge.ln_final(x), atol=1e-5)   # RMS norm
        True
    """
    with torch.no_grad():
        probe = torch.ones_like(x)
        probe[1::2] = -1  # mean 0 (even width) and rms 1: one call of the norm shows its gain
        base, ones, at_probe, at_x = norm(torch.stack([torch.zeros_like(x), torch.ones_like(x), probe, x])).double()
        # A LayerNorm maps a constant vector to its bias, as it maps zero; an RMS norm does not.
        centres = bool(torch.allclose(ones, base))

        def project(v: Tensor) -> Tensor:
            return v - v.mean(-1, keepdim=True) if centres else v

        gain = (at_probe - base) / project(probe.double())
        # norm(x) - base = gain ⊙ P(x) / s(x): the norm ratio is 1/s(x) up to the factor the
        # probe's own scale left in ``gain``, which this ratio cancels.
        denominator = float((gain * project(x.double())).norm())
        scale = float((at_x - base).norm()) / denominator if denominator > 0 else 0.0
    return lambda c: gain * project(c.double()) * scale


def _answer_pushes(
    model: Model, layer: int, acts: dict[str, Tensor], answer_id: int
) -> tuple[Float[Tensor, "d_mlp"], float, float]:
    """Every sub-update's direct push on the answer's logit (float64), the bias's, the whole FFN's.

    ``acts`` holds this position's ``ffn_keys``, ``ffn_out``, ``mlp`` (what the FFN adds
    to the residual) and ``final`` (the residual after the last block).
    """
    roles = model.roles
    post = roles.ffn_post_norm_module(model.bridge, layer)
    to_residual = (lambda c: c.double()) if post is None else frozen_norm(post, acts["ffn_out"])
    read = frozen_norm(model.bridge.ln_final, acts["final"])
    row = model.hf_model.get_output_embeddings().weight[answer_id].detach().double()
    values = roles.value_vectors(model.bridge, layer).detach()
    m = acts["ffn_keys"].double()
    with torch.no_grad():
        pushes = m * (read(to_residual(values)) @ row)
        # Whatever of the FFN output is no sub-update: the output bias (GPT-2's b_out), else rounding.
        rest = acts["ffn_out"].double() - m @ values.double()
        bias = float(read(to_residual(rest)) @ row)
        whole = float(read(acts["mlp"]) @ row)
    return pushes, bias, whole


def _capture(model: Model, tokens: Tensor, layer: int, position: int) -> dict[str, Tensor]:
    """This layer's FFN activations and residuals, and the final residual, at ``position``.

    ``final`` is kept at every position: the model's answer is read at the last one.
    """
    roles = model.roles
    names = {role: roles.hook(role, layer) for role in ("ffn_keys", "ffn_out", "mlp", "resid_pre", "resid")}
    names["final"] = roles.hook("resid", model.n_layers - 1)
    got = residuals(model, tokens, list(dict.fromkeys(names.values())))
    acts = {role: got[name][position] for role, name in names.items()}
    acts["final_all"] = got[names["final"]]
    return acts


def _answer_id(model: Model, prompt: str, answer: str | None, final_last: Tensor) -> int:
    """The first token of ``answer``, or the model's own top token after the prompt."""
    if answer is not None:
        return first_token_id(model, prompt, answer)
    with torch.no_grad():
        return int(model.unembed(final_last).argmax())


def answer_pushes(model: Model, prompt: str, *, layer: int, position: int = -1,
                  answer: str | None = None) -> Float[Tensor, "d_mlp"]:
    """Every sub-update's direct push on the answer's logit at ``layer``/``position`` (module doc).

    Args:
        model: a loaded model.
        prompt: the text.
        layer: the block (negative counts from the end).
        position: the token position (default: last).
        answer: a word such as ``"Paris"`` (its first token counts); default the
            model's top token after the prompt.

    Returns:
        A float64 tensor ``[d_mlp]``; with the bias's push (``memories(...).bias_answer_push``)
        it sums to the whole FFN update's push.

    Example:
        >>> p = answer_pushes(model, "The Eiffel Tower is located in the city of", layer=-3, answer="Paris")
        >>> int(p.argmax())   # the key that writes most of ' Paris' there   # doctest: +SKIP
        1723
    """
    layer = model.layer_index(layer)
    tokens = check_prompt(model, prompt)
    position = position_index(tokens.shape[1], position)
    acts = _capture(model, tokens, layer, position)
    answer_id = _answer_id(model, prompt, answer, acts["final_all"][-1])
    return _answer_pushes(model, layer, acts, answer_id)[0]


def memories(model: Model, prompt: str, *, layer: int, position: int = -1, top_k: int = 20,
             tokens_per_key: int = 8, answer: str | None = None) -> MemoryReport:
    """Decompose the FFN update at ``layer``/``position`` into its largest sub-updates.

    Args:
        model: a loaded model.
        prompt: the text; ``position`` indexes its tokens (BOS included).
        layer: the block (negative counts from the end).
        position: the token position (default: last).
        top_k: sub-updates to list, by weight ``|m_i| ||v_i||``.
        tokens_per_key: tokens listed per sub-update and for the whole update.
        answer: the word whose first token ``answer_push`` is measured on (e.g. the
            fact's true object); default the model's top token after the prompt.

    Returns:
        A :class:`MemoryReport`.

    Raises:
        WorkbenchError: layer or position out of range, empty prompt, ``top_k < 1``, empty answer.

    Example:
        >>> r = memories(model, "The Eiffel Tower is located in the city of", layer=-3, top_k=5)
        >>> r.lens_after[0].token, r.answer   # Gemma 3 270M
        (' Paris', ' Paris')
    """
    layer = model.layer_index(layer)
    top_k = checks.top_k(top_k)
    checks.whole("tokens_per_key", tokens_per_key, low=0, high=checks.MAX_TOP_K)
    tokens = check_prompt(model, prompt)
    position = position_index(tokens.shape[1], position)
    acts = _capture(model, tokens, layer, position)
    answer_id = _answer_id(model, prompt, answer, acts["final_all"][-1])
    m, ffn_out = acts["ffn_keys"], acts["ffn_out"]

    values = model.roles.value_vectors(model.bridge, layer).detach()
    value_norms = values.norm(dim=-1)
    weights = m.abs() * value_norms
    # float64 so the check measures the model's rounding, not ours.
    recon = (m.double()[:, None] * values.double()).sum(0)
    error = float((recon - ffn_out.double()).abs().max())
    k = min(top_k, model.d_mlp)
    top_w, top_keys = weights.topk(k)
    pushes, bias_push, ffn_push = _answer_pushes(model, layer, acts, answer_id)
    with torch.no_grad():
        # Sign matters: m_i < 0 writes -v_i, flipping what the sub-update promotes.
        signed = value_logits(model, layer, top_keys) * m[top_keys].sign()[:, None]
        ffn_logits = model.unembed(acts["mlp"])
        lens_logits = model.unembed(torch.stack([acts["resid_pre"], acts["resid"]])).float().softmax(-1)
    updates = [
        SubUpdate(key=int(i), coefficient=float(m[i]), value_norm=float(value_norms[i]), weight=float(w),
                  promotes=top_tokens(model, row, tokens_per_key),
                  demotes=top_tokens(model, row, tokens_per_key, largest=False), answer_push=float(pushes[i]))
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
        answer=model.tokenizer.decode([answer_id]), answer_id=answer_id,
        ffn_answer_push=ffn_push, bias_answer_push=bias_push,
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
