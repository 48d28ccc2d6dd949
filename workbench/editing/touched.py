"""What an edit touches: the corpus texts whose FFN output the update changes most.

A ROME-style edit adds ``ΔW`` to a layer's FFN output matrix ``W``; on any text,
at any token whose FFN key is ``k``, the layer's output moves by ``ΔW k``. The
edit is written for one key (the subject's), but every key that points the same
way moves too. :func:`touched` runs the key-statistics corpus through the model
with the weights as they were before the edit, ranks its texts by the largest
``‖ΔW k‖`` over their tokens, and then measures how much the edit changed the
next-token distribution there (KL, unedited ‖ edited) — on those texts and, as
the baseline, on random texts of the same corpus at random tokens.

Example:
    >>> h = wb.edit(model, fact, method="rome")                     # doctest: +SKIP
    >>> t = h.touched(top_k=5)                                      # doctest: +SKIP
    >>> t.top[0]["snippet"], t.kl_top_mean, t.kl_random_mean        # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from workbench.core.activations import capture
from workbench.errors import WorkbenchError
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken, progress
from workbench.results import Result


@dataclass
class TouchedResult(Result):
    """Texts an edit touches most, and how much it changed the model's next-token predictions there.

    Attributes:
        method, layers: the edit's.
        top: one dict per touched text, most touched first: ``snippet`` (the text around
            the token, the token in ⟦ ⟧), ``token``, ``position``, ``change`` (‖ΔW k‖
            summed over edited layers in quadrature), ``relative`` (that over ‖W k‖),
            ``kl_token`` (KL at that token), ``kl_text`` (mean KL over the text's tokens).
        random: the same for random texts at random tokens (the baseline).
        kl_top_mean, kl_random_mean: mean ``kl_token`` over ``top`` and over ``random``.
        kl_text_top_mean, kl_text_random_mean: mean ``kl_text`` over each.
        texts_scanned, tokens_scanned: how much of the corpus was ranked.
    """

    method: str
    layers: list[int]
    top: list[dict]
    random: list[dict]
    kl_top_mean: float
    kl_random_mean: float
    kl_text_top_mean: float
    kl_text_random_mean: float
    texts_scanned: int
    tokens_scanned: int
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_pandas(self):
        import pandas as pd

        rows = [{"group": "touched", "rank": i + 1, **r} for i, r in enumerate(self.top)]
        rows += [{"group": "random", "rank": None, **r} for r in self.random]
        return pd.DataFrame(rows)


def _ffn_deltas(model: Model, handle) -> dict[int, Tensor]:
    """``{layer: ΔW as [d_model, d_mlp]}`` for the FFN output matrices the edit changed."""
    from workbench.editing.weights import as_matrix, value_param

    by_name = {value_param(model, layer)[0]: layer for layer in range(model.n_layers)}
    other = sorted(set(handle.after) - set(by_name))
    if other:
        raise WorkbenchError(
            f"touched texts are measured for edits of FFN output matrices; this {handle.method} edit also "
            f"changed {other[0]}")
    return {by_name[n]: (as_matrix(model, handle.after[n]).float() - as_matrix(model, handle.before[n]).float())
            for n in handle.after}


def touched(
    handle,
    *,
    top_k: int = 10,
    n_random: int | None = None,
    samples: int = 20_000,
    texts: list[str] | None = None,
    max_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    cancel: CancelToken | None = None,
) -> TouchedResult:
    """The corpus texts an applied weight edit changes most (see the module docstring).

    Args:
        handle: an active :class:`~workbench.editing.handle.EditHandle` that changed FFN
            output matrices (rome, memit, pmet, ...).
        top_k: touched texts to return.
        n_random: random texts for the baseline (default ``top_k``).
        samples: corpus tokens ranked (the first texts of the key-statistics split).
        texts: rank these texts instead of the corpus.
        max_tokens: each text cut to this many tokens.
        seed: which random texts and tokens form the baseline.

    Raises:
        WorkbenchError: the edit is reverted, changes no weights, or changes weights
            other than FFN output matrices; nothing to rank.
    """
    started = time.perf_counter()
    model = handle.model
    if not handle.active:
        raise WorkbenchError("this edit has been reverted: apply it again to see what it touches")
    if not handle.changes_weights:
        raise WorkbenchError(f"a {handle.method} edit changes no weights: it touches no text "
                             "(it rewrites the prompt, or answers from a memory in the forward pass; see its prompt_edit)")
    if handle.later_clash() is not None:
        raise WorkbenchError("a later edit changed the same weights: revert it first to see what this one touches")
    if top_k < 1:
        raise WorkbenchError(f"top_k must be at least 1, got {top_k}")
    deltas = _ffn_deltas(model, handle)
    n_random = top_k if n_random is None else n_random
    if texts is None:
        from workbench.corpus import wiki_texts

        texts = wiki_texts("stats")
    encoded = _encode(model, texts, samples, max_tokens)
    if not encoded:
        raise WorkbenchError("no text to rank")
    with handle.weights_before():
        change, base = _key_changes(model, deltas, encoded, batch_size, cancel)
    # A text's score: its most changed token (BOS and padding never count).
    best = [(float(c.max()), int(c.argmax()), i) for i, c in enumerate(change) if len(c)]
    best.sort(reverse=True)
    top = best[:top_k]
    rng = random.Random(seed)
    pool = [i for _, _, i in best[top_k:]]
    picks = rng.sample(pool, min(n_random, len(pool)))
    rand = [(float(change[i][p]), p, i) for i in picks for p in [rng.randrange(len(change[i]))]]
    chosen = top + rand
    kl_token, kl_text = _kl(model, handle, [encoded[i] for _, _, i in chosen], [p for _, p, _ in chosen], batch_size)

    def row(j: int, c: float, p: int, i: int) -> dict:
        ids = encoded[i]
        pos = p + 1  # change[] skips the BOS token at 0
        return {"text_index": i, "position": pos, "token": model.tokenizer.decode([ids[pos]]),
                "snippet": _snippet(model, ids, pos), "change": c,
                "relative": float(c / max(float(base[i][p]), 1e-12)), "kl_token": kl_token[j], "kl_text": kl_text[j]}

    rows = [row(j, c, p, i) for j, (c, p, i) in enumerate(chosen)]
    top_rows, rand_rows = rows[: len(top)], rows[len(top):]
    mean = lambda rs, k: float(sum(r[k] for r in rs) / len(rs)) if rs else math.nan  # noqa: E731
    return TouchedResult(
        method=handle.method, layers=sorted(deltas), top=top_rows, random=rand_rows,
        kl_top_mean=mean(top_rows, "kl_token"), kl_random_mean=mean(rand_rows, "kl_token"),
        kl_text_top_mean=mean(top_rows, "kl_text"), kl_text_random_mean=mean(rand_rows, "kl_text"),
        texts_scanned=len(encoded), tokens_scanned=sum(len(c) for c in change),
        seconds=time.perf_counter() - started,
    )


def _encode(model: Model, texts: list[str], samples: int, max_tokens: int) -> list[list[int]]:
    """Texts as token ids (with BOS), cut to ``max_tokens``, until ``samples`` tokens are taken."""
    out, count = [], 0
    for text in texts:
        ids = model.encode(text)[:max_tokens]
        if len(ids) < 2:
            continue
        out.append(ids)
        count += len(ids) - 1
        if count >= samples:
            break
    return out


def _batches(encoded: list[list[int]], batch_size: int, pad: int):
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        yield start, batch, ids, mask


def _key_changes(model: Model, deltas: dict[int, Tensor], encoded, batch_size: int, cancel):
    """Per text, per token after BOS: ‖ΔW k‖ (edited layers in quadrature) and ‖W k‖ likewise."""
    from workbench.editing.weights import as_matrix, value_param

    weights = {l: as_matrix(model, value_param(model, l)[1].detach()).float() for l in deltas}
    sites = {l: model.roles.hook("ffn_keys", l) for l in deltas}
    pad = model.tokenizer.pad_token_id or 0
    change, base = [], []
    steps = progress(list(_batches(encoded, batch_size, pad)), desc="what the edit touches", cancel=cancel)
    with torch.no_grad():
        for _, batch, ids, mask in steps:
            # The pass stops at the last edited layer: nothing above it is needed.
            read = capture(model, ids, list(sites.values()), mask=mask.to(model.device))
            got = {l: read[site] for l, site in sites.items()}
            sq_change = sum((got[l].float() @ deltas[l].T.to(got[l].device)).pow(2).sum(-1) for l in deltas)
            sq_base = sum((got[l].float() @ weights[l].T).pow(2).sum(-1) for l in deltas)
            for i, b in enumerate(batch):
                change.append(sq_change[i, 1 : len(b)].sqrt().cpu())
                base.append(sq_base[i, 1 : len(b)].sqrt().cpu())
    return change, base


def _kl(model: Model, handle, encoded, positions: list[int], batch_size: int) -> tuple[list[float], list[float]]:
    """KL(unedited ‖ edited) of the next-token distribution at each text's chosen token
    (``positions`` count from the first token after BOS) and its mean over the text."""
    from workbench.probing import UNEMBED_ROWS

    pad = model.tokenizer.pad_token_id or 0

    def hiddens() -> Tensor:
        rows = []
        with torch.no_grad():
            for _, batch, ids, mask in _batches(encoded, batch_size, pad):
                hidden = model.hidden(ids.to(model.device), mask.to(model.device))
                rows.extend(hidden[i, 1 : len(b)] for i, b in enumerate(batch))
        return torch.cat(rows)

    lengths = [len(ids) - 1 for ids in encoded]
    after = hiddens()
    with handle.weights_before():
        before = hiddens()
    # The edit changes FFN weights only, so the same unembedding serves both sides, and only the
    # hidden states need keeping: full-vocabulary rows exist a bounded chunk at a time (kept for
    # every text before and after, as they were, they took gigabytes on Gemma's 262k tokens).
    step = max(1, UNEMBED_ROWS // 2)
    kls = []
    with torch.no_grad():
        for start in range(0, after.shape[0], step):
            b, a = before[start : start + step], after[start : start + step]
            logp = model.logits_from_hidden(torch.cat([b, a])).float().log_softmax(-1)
            lb, la = logp[: len(b)], logp[len(b) :]
            kls.append((lb.exp() * (lb - la)).sum(-1).clamp_min(0).cpu())
    at, mean = [], []
    for kl, p in zip(torch.cat(kls).split(lengths), positions):
        at.append(float(kl[p]))
        mean.append(float(kl.mean()))
    return at, mean


def _snippet(model: Model, ids: list[int], pos: int, before: int = 12, after: int = 4) -> str:
    """The text around token ``pos``, the token in ⟦ ⟧."""
    left = model.tokenizer.decode(ids[max(1, pos - before) : pos])
    right = model.tokenizer.decode(ids[pos + 1 : pos + 1 + after])
    return f"{left}⟦{model.tokenizer.decode([ids[pos]])}⟧{right}".replace("\n", " ")
