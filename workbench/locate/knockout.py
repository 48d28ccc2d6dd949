"""Attention knockout (Geva et al. 2023): which attention edges carry the answer to the last position?

Recall ends with attention reading an attribute off the subject into the last
position. To see where, block the attention edges *into the last position* from
one group of positions — the subject's tokens, the other tokens before the last,
or the last token itself — over a window of layers centred on each layer
(``window`` layers, clipped at the ends as the paper does), by setting those
pre-softmax attention scores to −inf, and report the relative change in
p(answer): ``(p_blocked − p_clean) / p_clean``. A large drop in the subject's
curve at upper-middle layers is the paper's "attribute extraction".

How it is made fast: blocking edges into the last position changes nothing at
any other position (attention is causal, and no earlier position reads the
last), so every blocked run recomputes the last position alone, with the clean
run's keys and values for the positions before it
(:class:`~workbench.locate.blocks.BlockRunner`). All windows × groups, plus an
unblocked row that gives ``p_clean``, are rows of one batched pass of a single
position: the unblocked row and a row that blocks nothing are the same
computation, so nothing-blocked reads exactly 0.

Gotchas:

* The hook is ``blocks.{l}.attn.hook_attn_scores``, which the bridge fires after
  the causal / sliding-window mask and after any logit soft-capping (Gemma 2), so
  −inf there removes an edge outright (before the soft-cap, tanh would turn −inf
  into a finite score).
* Most models park attention on the first token (BOS), the *attention sink*.
  Blocking it moves that parked mass onto the remaining tokens, which measures
  the sink rather than the flow of information, so by default a leading special
  token belongs to no group (``spare_bos=False`` puts it into ``"other"``).
* A row whose every edge is blocked has no attention at all: its softmax would
  be 0/0, and its attention output is taken to be zero.

Example:
    >>> r = knockout(model, Fact("Eiffel Tower", "The {} is located in the city of", "Paris"))
    >>> r.answer, min(r.changes["subject"]) < -0.5   # doctest: +SKIP
    (' Paris', True)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench import checks
from workbench.errors import WorkbenchError
from workbench.locate.blocks import BlockRunner
from workbench.locate.cells import window_layers
from workbench.locate.setup import LOW_CLEAN_PROB, answer_token
from workbench.locate.spans import prompt_and_subject, subject_span
from workbench.core.model import Model
from workbench.results import Result

#: The paper's window of layers (GPT-J and GPT-2 XL); shallower models get their depth.
WINDOW = 9
#: The paper's three groups of source positions, in the order they are drawn.
GROUPS = ("subject", "other", "last")
#: The bridge's pre-softmax attention scores ``[batch, head, query, key]`` (after masks and soft-cap)
#: and post-softmax pattern; the same names for every family the bridge boots.
SCORES_HOOK = "blocks.{layer}.attn.hook_attn_scores"
PATTERN_HOOK = "blocks.{layer}.attn.hook_pattern"


@dataclass
class KnockoutResult(Result):
    """What :func:`knockout` returns.

    Attributes:
        tokens: the prompt's tokens, decoded one by one.
        subject_range: ``[start, end)`` token positions of the subject.
        answer: the scored token; ``clean_prob`` its probability with nothing blocked.
        layers: the centre layer of each window (0..n_layers-1).
        windows: ``[lo, hi)`` layers blocked for each centre layer.
        positions: each group's blocked source positions.
        probs: ``probs[group][i]`` = p(answer) with the group blocked over ``windows[i]``.
        changes: ``changes[group][i]`` = ``(probs - clean_prob) / clean_prob``.
        spared: positions in no group (the attention sink), see the module docstring.

    Example:
        >>> r.to_pandas().pivot(index="layer", columns="group", values="change")  # doctest: +SKIP
    """

    model: str
    prompt: str
    subject: str
    tokens: list[str]
    subject_range: list[int]
    answer: str
    answer_id: int
    clean_prob: float
    window: int
    layers: list[int]
    windows: list[list[int]]
    positions: dict[str, list[int]]
    probs: dict[str, list[float]]
    changes: dict[str, list[float]]
    spared: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def groups(self) -> list[str]:
        return list(self.changes)

    def to_pandas(self):
        """One row per (group, centre layer): the window, p(answer) blocked and the relative change."""
        import pandas as pd

        return pd.DataFrame([
            {"group": g, "layer": layer, "window_start": lo, "window_end": hi,
             "prob": self.probs[g][i], "change": self.changes[g][i]}
            for g in self.changes for i, (layer, (lo, hi)) in enumerate(zip(self.layers, self.windows))
        ])


def check_window(window: int | None, n_layers: int) -> int:
    """``window`` as an int if it is a whole number of layers from 1 to ``n_layers``;
    None gives the paper's :data:`WINDOW`, or ``n_layers`` when the model is shallower.

    Example:
        >>> check_window(9, 18), check_window(None, 4)
        (9, 4)
    """
    if window is None:
        return min(WINDOW, n_layers)
    return checks.whole("window", window, low=1, high=n_layers)


def source_groups(
    n_tokens: int, begin: int, end: int, first_is_special: bool, *, spare_bos: bool = True
) -> tuple[dict[str, list[int]], list[int]]:
    """The paper's groups of source positions for a prompt of ``n_tokens`` tokens whose
    subject covers ``[begin, end)``, and the positions left out of every group.

    Example:
        >>> source_groups(8, 2, 4, True)
        ({'subject': [2, 3], 'other': [1, 4, 5, 6], 'last': [7]}, [0])
    """
    last = n_tokens - 1
    spared = [0] if spare_bos and first_is_special and begin > 0 else []
    subject = [p for p in range(begin, end) if p != last]
    other = [p for p in range(last) if not begin <= p < end and p not in spared]
    return {"subject": subject, "other": other, "last": [last]}, spared


@dataclass(frozen=True)
class Block:
    """One knockout: the edges from ``sources`` into the last position, cut in ``layers``."""

    sources: tuple[int, ...]
    layers: tuple[int, ...]


def last_position_runs(
    runner: BlockRunner, blocks: Sequence[Block]
) -> Float[Tensor, "blocks d_model"]:
    """The final normed hidden state at the last position under each block, in one batched pass.

    Only the last position is recomputed (from block 0, from the clean residual), with the
    clean run's keys and values for the positions before it; see the module docstring.
    """
    model = runner.model
    n_pos = runner.tokens.shape[1]
    last = n_pos - 1
    rows = len(blocks)
    device = runner.resid[0].device
    cut = torch.zeros(model.n_layers, rows, n_pos, dtype=torch.bool, device=device)
    for row, block in enumerate(blocks):
        for layer in block.layers:
            cut[layer, row, list(block.sources)] = True

    fired: set[int] = set()

    def block_scores(layer: int):
        # [rows, 1, 1, keys]: heads share the cut; only the last query row exists in this run.
        mask = cut[layer][:, None, None, :]

        def fn(scores: Tensor, hook=None) -> Tensor:
            fired.add(layer)
            return scores.masked_fill(mask, float("-inf"))
        return fn

    def no_attention(layer: int):
        # Every edge cut: softmax gave NaN (0/0); no attention means a zero mix of the values.
        # (Prompts are shorter than any sliding window, so no key was masked before the cut.)
        empty = cut[layer].all(-1)[:, None, None, None]

        def fn(pattern: Tensor, hook=None) -> Tensor:
            return pattern.masked_fill(empty, 0.0)
        return fn

    hooks = []
    for layer in range(model.n_layers):
        if cut[layer].any():
            hooks.append((SCORES_HOOK.format(layer=layer), block_scores(layer)))
        if cut[layer].all(-1).any():
            hooks.append((PATTERN_HOOK.format(layer=layer), no_attention(layer)))
    x = runner.resid[0][:, last:].expand(rows, -1, -1).contiguous()
    hidden = runner.run(0, x, hooks, first=last, prefix=runner.clean.kv)
    missed = sorted(set(int(l) for l in cut.any(-1).any(-1).nonzero().flatten()) - fired)
    if missed:
        # An attention that hands its work to a fused kernel has the hook but never calls it.
        raise WorkbenchError(f"{model.name}'s attention at layer {missed[0]} did not pass its scores through "
                             f"{SCORES_HOOK.format(layer=missed[0])}: knockout cannot block edges there")
    return hidden


def knockout_probs(
    model: Model, tokens: Int[Tensor, "1 pos"], blocks: Sequence[Block], answer_id: int | None = None
) -> tuple[Float[Tensor, "blocks"], int]:
    """p(answer) at the last position under each :class:`Block`, and the answer's id
    (default: the top-1 token of the first block, which should then block nothing).

    Example:
        >>> probs, answer = knockout_probs(model, model.tokens("The Eiffel Tower is in"), [Block((), ())])
    """
    _check_hooks(model)
    n_pos = tokens.shape[1]
    for block in blocks:
        bad = [p for p in block.sources if not 0 <= p < n_pos] + [l for l in block.layers if not 0 <= l < model.n_layers]
        if bad:
            raise WorkbenchError(f"knockout position or layer {bad[0]} is out of range "
                                 f"({n_pos} tokens, {model.n_layers} layers)")
    with torch.no_grad():
        hidden = last_position_runs(BlockRunner(model, tokens), blocks)
        # One pass over the unembedding for the top-1 and every row's p: it is the largest
        # matrix of a small model (262k x 640 on Gemma 3), and reading it dominates.
        probs = []
        for i in range(0, hidden.shape[0], 64):
            logp = model.logits_from_hidden(hidden[i: i + 64]).float().log_softmax(-1)
            if answer_id is None:
                answer_id = int(logp[0].argmax())
            probs.append(logp[:, answer_id].exp())
        return torch.cat(probs), answer_id


def _check_hooks(model: Model) -> None:
    name = SCORES_HOOK.format(layer=0)
    if name not in getattr(model.bridge, "hook_dict", {}):
        raise WorkbenchError(f"{model.name}'s attention has no pre-softmax score hook ({name}): "
                             "knockout needs attention the bridge reimplements")


def _groups(groups, default: dict[str, list[int]], n_pos: int) -> dict[str, list[int]]:
    """The named groups asked for, or a user's own ``{name: positions}``."""
    if isinstance(groups, str):
        groups = (groups,)
    if isinstance(groups, Mapping):
        out = {}
        for name, positions in groups.items():
            positions = [checks.whole(f"a position of group {name!r}", p, low=0, high=n_pos - 1) for p in positions]
            out[str(name)] = sorted(set(positions))
        if not out:
            raise WorkbenchError("no groups to block: give group names or {name: positions}")
        return out
    groups = tuple(groups)
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        raise WorkbenchError(f"unknown knockout group {bad[0] if bad else None!r}; choose from {', '.join(GROUPS)}")
    return {g: default[g] for g in dict.fromkeys(groups)}


def knockout(
    model: Model,
    fact,
    *,
    window: int | None = None,
    answer: str | None = None,
    subject: str | None = None,
    groups: Sequence[str] | Mapping[str, Sequence[int]] = GROUPS,
    spare_bos: bool = True,
) -> KnockoutResult:
    """Block attention into the last position from each group of tokens, over a window of
    layers around each layer, and report the relative change in p(answer).

    Args:
        model: a loaded model (edited or not: it reads the weights as they are).
        fact: a :class:`~workbench.facts.Fact`, a ``(prompt, subject)`` pair (``{}`` in the
            prompt marks the subject), or a prompt with ``subject=``.
        window: layers blocked around each layer, 1 to ``n_layers``; default the paper's 9
            (or every layer, on a model shallower than that).
        answer: the word whose first token is scored (e.g. an edit's new object); default
            the model's top-1 next token.
        subject: the subject, when ``fact`` is a bare prompt.
        groups: some of ``"subject"``, ``"other"``, ``"last"``, or your own
            ``{name: [positions]}`` (positions count from 0, BOS included).
        spare_bos: leave a leading special token (the attention sink) out of ``"other"``.

    Returns:
        A :class:`KnockoutResult`.

    Raises:
        WorkbenchError: a window outside 1..n_layers, the subject not in the prompt or
            ending it, an unknown group, a position out of range.

    Example:
        >>> r = knockout(model, ("The {} is located in the city of", "Eiffel Tower"), window=9)
        >>> r.changes["subject"][12]    # doctest: +SKIP
        -0.83
    """
    started = time.perf_counter()
    window = check_window(window, model.n_layers)
    if not isinstance(spare_bos, bool):
        raise WorkbenchError(f"spare_bos must be True or False, got {spare_bos!r}")
    prompt, subject, target_true = prompt_and_subject(fact, subject)
    tokens = model.tokens(prompt)
    n_pos = tokens.shape[1]
    checks.prompt_length(n_pos, "knockout")
    ids = tokens[0].tolist()
    begin, end = subject_span(model, ids, prompt, subject)
    if end >= n_pos:
        raise WorkbenchError(f"the subject {subject!r} ends the prompt: knockout follows it to a later "
                             "position, so put the relation after it")
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    default, spared = source_groups(n_pos, begin, end, ids[0] in special, spare_bos=spare_bos)
    chosen = _groups(groups, default, n_pos)
    answer_id = None if answer is None else answer_token(model, answer)
    _check_hooks(model)

    n = model.n_layers
    windows = [window_layers(layer, window, n) for layer in range(n)]
    blocks = [Block((), ())]  # row 0: nothing blocked, the clean probability
    blocks += [Block(tuple(pos), tuple(range(lo, hi))) for pos in chosen.values() for lo, hi in windows]
    probs, answer_id = knockout_probs(model, tokens, blocks, answer_id)
    probs = probs.double()
    clean = float(probs[0])
    blocked = probs[1:].reshape(len(chosen), n)
    # p_clean is 0 only for an answer the model cannot say at all; the change is then undefined.
    change = (blocked - probs[0]) / probs[0] if clean > 0 else torch.full_like(blocked, float("nan"))
    answer_text = model.tokenizer.decode([answer_id])
    return KnockoutResult(
        model=model.name, prompt=prompt, subject=subject, tokens=model.str_tokens(ids),
        subject_range=[begin, end], answer=answer_text, answer_id=answer_id, clean_prob=clean, window=window,
        layers=list(range(n)), windows=[list(w) for w in windows], positions=chosen,
        probs={g: [float(p) for p in row] for g, row in zip(chosen, blocked)},
        changes={g: [float(c) for c in row] for g, row in zip(chosen, change)},
        spared=spared if "other" in chosen else [],
        warnings=_warnings(answer_text, None if answer is not None else target_true, clean, chosen),
        seconds=time.perf_counter() - started,
    )


def _warnings(answer: str, target_true: str | None, clean: float, chosen: dict[str, list[int]]) -> list[str]:
    out = []
    if clean < LOW_CLEAN_PROB:
        out.append(f"the answer {answer!r} has p={clean:.3f} < {LOW_CLEAN_PROB} with nothing blocked: "
                   "relative changes of a small probability are mostly noise")
    if target_true is not None and answer.strip() and not target_true.strip().startswith(answer.strip()):
        out.append(f"the model's top-1 {answer!r} does not begin the fact's object {target_true!r}: "
                   "knocking out the model's answer")
    out += [f"group {g!r} has no positions in this prompt: its curve is 0" for g, pos in chosen.items() if not pos]
    return out
