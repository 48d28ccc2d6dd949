"""Logit lens: read the residual stream after every layer through the unembedding.

The residual after block ``l`` (``roles.hook("resid", l)``) is passed through the
model's final norm and unembedding (:meth:`~workbench.core.model.Model.unembed`), as if
the remaining blocks added nothing (nostalgebraist 2020). Early layers read
poorly on models whose residual drifts far from the final basis; the lens is a
first look, not a measurement of what a layer "knows".

Example:
    >>> r = lens(model, "The Eiffel Tower is located in the city of", watch="Paris")
    >>> r.watch_rank[-1]
    0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench import checks
from workbench.core.activations import capture
from workbench.errors import WorkbenchError
from workbench.core.model import Model
from workbench.probing import target_ids
from workbench.results import Result


@dataclass
class TokenScore(Result):
    """A vocabulary token and a score (a logit, a probability or a projection)."""
    token: str
    id: int
    score: float


def top_tokens(model: Model, scores: Float[Tensor, "d_vocab"], k: int, *, largest: bool = True) -> list[TokenScore]:
    """The ``k`` tokens with the largest (or smallest) scores, decoded."""
    k = min(int(k), scores.shape[-1])
    values, ids = scores.float().topk(k, largest=largest)
    return [TokenScore(model.tokenizer.decode([int(i)]), int(i), float(v)) for v, i in zip(values, ids)]


def check_prompt(model: Model, prompt: str) -> Tensor:
    """Tokenise a prompt, refusing empty ones with a clear message."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError("empty prompt")
    tokens = model.tokens(prompt)
    checks.prompt_length(tokens.shape[1], "the locator")
    return tokens


def position_index(n_tokens: int, position: int) -> int:
    """Validate a token position (negative counts from the end); return it non-negative."""
    if not isinstance(position, int) or isinstance(position, bool):
        raise WorkbenchError(f"position must be an integer, got {position!r}")
    if not -n_tokens <= position < n_tokens:
        raise WorkbenchError(
            f"position {position} is out of range: the prompt has {n_tokens} tokens (0..{n_tokens - 1})"
        )
    return position % n_tokens


def first_token_id(model: Model, prompt: str, token: str) -> int:
    """The id of the first token of ``token`` read as a continuation of ``prompt``."""
    if not isinstance(token, str) or not token.strip():
        raise WorkbenchError(f"target {token!r} is empty; give a word such as 'Paris'")
    return target_ids(model, prompt, token)[0]


@dataclass
class LensResult(Result):
    """What :func:`lens` returns.

    Attributes:
        tokens: the prompt's tokens, decoded one by one.
        top: ``top[layer][position]`` = the lens's top tokens (scores are probabilities).
        watch: the watched token as scored (its first token), or None.
        watch_prob: ``[layer][position]`` probability of the watched token.
        watch_rank: per layer, the watched token's rank (0 = top) at the last position.
    """

    model: str
    prompt: str
    tokens: list[str]
    top: list[list[list[TokenScore]]]
    watch: str | None = None
    watch_id: int | None = None
    watch_prob: list[list[float]] = field(default_factory=list)
    watch_rank: list[int] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.top)

    def to_pandas(self):
        """One row per (layer, position) with the top token and the watched token's probability."""
        import pandas as pd

        rows = []
        for layer, per_pos in enumerate(self.top):
            for pos, tops in enumerate(per_pos):
                row = {"layer": layer, "position": pos, "token": self.tokens[pos],
                       "top1": tops[0].token if tops else None, "top1_prob": tops[0].score if tops else None}
                if self.watch is not None:
                    row["watch_prob"] = self.watch_prob[layer][pos]
                    row["watch_rank_last"] = self.watch_rank[layer] if pos == len(self.tokens) - 1 else None
                rows.append(row)
        return pd.DataFrame(rows)


def residuals(model: Model, tokens: Tensor, hooks: list[str]) -> dict[str, Float[Tensor, "pos d_model"]]:
    """Activations at the named hooks for one prompt (batch dimension dropped).

    Keyed by the name asked for (some hook names are aliases whose HookPoint reports
    another name); the pass stops once the last of them is read.
    """
    got = capture(model, tokens, hooks)
    return {name: got[name][0].detach() for name in hooks if name in got}


def lens(model: Model, prompt: str, *, watch: str | None = None, top_k: int = 5) -> LensResult:
    """Top tokens of the residual stream after every layer, at every position.

    Args:
        model: a loaded model.
        prompt: the text to read.
        watch: a token (e.g. ``"Paris"``) whose probability and rank to follow
            across layers; a multi-token word is followed by its first token.
        top_k: tokens listed per (layer, position).

    Returns:
        A :class:`LensResult`; the last layer's reading equals the model's own output.

    Example:
        >>> r = lens(model, "The Eiffel Tower is located in the city of", watch="Paris")
        >>> r.top[-1][-1][0].token
        ' Paris'
    """
    top_k = checks.top_k(top_k)
    tokens = check_prompt(model, prompt)
    watch_id = first_token_id(model, prompt, watch) if watch is not None else None
    names = [model.roles.hook("resid", layer) for layer in range(model.n_layers)]
    acts = residuals(model, tokens, names)
    top, watch_prob, watch_rank = [], [], []
    with torch.no_grad():
        for name in names:
            # One layer at a time: [pos, d_vocab] is already large for a 262k vocabulary.
            probs = model.unembed(acts[name]).float().softmax(-1)
            top.append([top_tokens(model, row, top_k) for row in probs])
            if watch_id is not None:
                watch_prob.append([float(p) for p in probs[:, watch_id]])
                watch_rank.append(int((probs[-1] > probs[-1, watch_id]).sum()))
    return LensResult(
        model=model.name, prompt=prompt, tokens=model.str_tokens(tokens), top=top,
        watch=None if watch is None else model.tokenizer.decode([watch_id]), watch_id=watch_id,
        watch_prob=watch_prob, watch_rank=watch_rank,
    )
