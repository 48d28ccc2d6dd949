"""What an FFN key responds to: its top-activating contexts in natural text.

Geva et al. (2021) read a key's meaning from the text prefixes that activate it
most. :func:`top_contexts` makes one batched pass over Wikipedia leads
(:func:`workbench.corpus.wiki_texts` ``("stats")``) and keeps, for *every* key of
the requested layers at once, the ``top_n`` largest (and most negative)
coefficients with where they occurred (text index, token position). The result
is cached on disk per (model, fingerprint, layer, corpus settings), so the second
look at any key of that layer is instant.

The BOS position is skipped: it is the same token in every text and its
activations (an attention sink) would fill every list.

Cost: see ``DEFAULT_TEXTS``.

Example:
    >>> p = key_profile(model, 12, 7, prompt="The Eiffel Tower is in")
    >>> print(p.contexts[0].text)   # doctest: +SKIP
    ...the activating token in ⟦brackets⟧ and what follows...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.runtime.cache import cache_dir, load_checked, save_checked
from workbench.corpus import CORPUS_NAME, wiki_texts
from workbench.errors import WorkbenchError
from workbench.locate.ffn import key_coefficients, key_index, value_logits
from workbench.locate.lens import TokenScore, check_prompt, top_tokens
from workbench.core.activations import capture
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken, progress
from workbench.results import Result

#: Texts read by default: about a minute on 2 CPU cores at the slowest layer (docs/performance.md).
DEFAULT_TEXTS = 150
DEFAULT_MAX_TOKENS = 64


@dataclass
class LayerContexts:
    """Top-N coefficients of every key of one layer over a corpus.

    ``top_values[i, j]`` is key ``i``'s j-th largest coefficient, found in text
    ``top_where[i, j] // max_tokens`` at token position ``top_where[i, j] % max_tokens``;
    ``bottom_*`` hold the most negative ones (gated FFNs write ``-v_i`` there).
    """

    layer: int
    n_texts: int
    max_tokens: int
    top_values: Float[Tensor, "d_mlp top_n"]
    top_where: Int[Tensor, "d_mlp top_n"]
    bottom_values: Float[Tensor, "d_mlp top_n"]
    bottom_where: Int[Tensor, "d_mlp top_n"]


def _cache_path(model: Model, layer: int, n_texts: int, max_tokens: int, top_n: int):
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name)
    folder = cache_dir("keycontexts", f"{safe}-{model.fingerprint}")
    return folder / f"{CORPUS_NAME}-n{n_texts}-len{max_tokens}-top{top_n}-layer{layer:03d}.pt"


def _merge(best_v: Tensor, best_w: Tensor, vals: Tensor, where: Tensor, top_n: int, largest: bool):
    """Keep the top_n along dim 0 of the running lists and a batch's candidates."""
    v = torch.cat([best_v, vals])
    w = torch.cat([best_w, where])
    keep_v, idx = v.topk(min(top_n, v.shape[0]), dim=0, largest=largest)
    return keep_v, torch.gather(w, 0, idx)


def _check_record(record, d_mlp: int, top_n: int) -> str | None:
    """None if a cached layer record has the fields and shapes :class:`LayerContexts` needs, else why not."""
    names = {f for f in LayerContexts.__dataclass_fields__}
    if not isinstance(record, dict) or set(record) != names:
        return "not a key-contexts record"
    for name in ("top_values", "top_where", "bottom_values", "bottom_where"):
        value = record[name]
        if not isinstance(value, Tensor) or value.dim() != 2 or value.shape[0] != d_mlp or value.shape[1] > top_n:
            return f"{name} is not a [{d_mlp}, <= {top_n}] tensor"
    if torch.isnan(record["top_values"]).any() or torch.isnan(record["bottom_values"]).any():
        return "it holds NaN"
    return None


def _encode(model: Model, texts: list[str], max_tokens: int) -> list[list[int]]:
    return [model.encode(t)[:max_tokens] for t in texts]


def top_contexts(
    model: Model,
    layers: int | list[int],
    *,
    n_texts: int = DEFAULT_TEXTS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    top_n: int = 10,
    batch_size: int = 16,
    cancel: CancelToken | None = None,
) -> dict[int, LayerContexts]:
    """Top-activating corpus positions of every key of the given layers (cached).

    One pass computes all missing layers; cached layers are read from disk.

    Args:
        model: a loaded model.
        layers: a layer or layers.
        n_texts: how many Wikipedia leads (``wiki_texts("stats")``) to read.
        max_tokens: each text is cut to this many tokens.
        top_n: positions kept per key and sign.
        batch_size: texts per forward pass.
        cancel: a token the UI can trip; nothing is cached then.

    Example:
        >>> ctx = top_contexts(model, 12, n_texts=50)[12]
        >>> ctx.top_values.shape
        torch.Size([2048, 10])
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    layers = sorted({model.layer_index(l) for l in layers})
    for name, value, low in (("n_texts", n_texts, 1), ("max_tokens", max_tokens, 2), ("top_n", top_n, 1)):
        if not isinstance(value, int) or value < low:
            raise WorkbenchError(f"{name} must be an integer >= {low}, got {value!r}")
    out: dict[int, LayerContexts] = {}
    missing = []
    for layer in layers:
        path = _cache_path(model, layer, n_texts, max_tokens, top_n)
        record = load_checked(path, lambda r: _check_record(r, model.d_mlp, top_n))
        if record is not None:
            out[layer] = LayerContexts(**record)
        else:
            missing.append(layer)
    if not missing:
        return out

    texts = wiki_texts("stats", limit=n_texts)
    encoded = _encode(model, texts, max_tokens)
    bos = model.tokenizer.bos_token_id
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    d_mlp = model.d_mlp
    neg = torch.full((0, d_mlp), 0.0)
    state = {l: [neg, neg.long(), neg, neg.long()] for l in missing}
    sites = {l: model.roles.hook("ffn_keys", l) for l in missing}
    # Similar lengths together waste less compute on padding.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in progress(batches, desc=f"key contexts, layers {missing}", total=len(batches), cancel=cancel):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = True
            valid = mask & (ids != bos) if bos is not None else mask
            where = (torch.tensor(batch)[:, None] * max_tokens + torch.arange(width)[None]).reshape(-1)
            # The pass stops at the highest layer asked for.
            got = capture(model, ids, list(sites.values()), mask=mask.long().to(model.device))
            flat_valid = valid.reshape(-1, 1)
            for l in missing:
                acts = got[sites[l]].detach().float().cpu().reshape(-1, d_mlp)
                k = min(top_n, acts.shape[0])
                s = state[l]
                v, r = acts.masked_fill(~flat_valid, float("-inf")).topk(k, dim=0)
                s[0], s[1] = _merge(s[0], s[1], v, where[r], top_n, True)
                v, r = acts.masked_fill(~flat_valid, float("inf")).topk(k, dim=0, largest=False)
                s[2], s[3] = _merge(s[2], s[3], v, where[r], top_n, False)
    for l in missing:
        top_v, top_w, bot_v, bot_w = state[l]
        record = dict(layer=l, n_texts=len(texts), max_tokens=max_tokens,
                      top_values=top_v.T.contiguous(), top_where=top_w.T.contiguous(),
                      bottom_values=bot_v.T.contiguous(), bottom_where=bot_w.T.contiguous())
        save_checked(_cache_path(model, l, n_texts, max_tokens, top_n), record)
        out[l] = LayerContexts(**record)
    return out


@dataclass
class KeyContext(Result):
    """A corpus position where a key fired: ``text`` shows the tokens around it,
    the activating token in ``⟦ ⟧`` (the key sees only what precedes it)."""

    activation: float
    text_index: int
    position: int
    token: str
    text: str


@dataclass
class KeyProfile(Result):
    """What :func:`key_profile` returns.

    Attributes:
        promotes / demotes: tokens the value vector ``v_i`` pushes up / down
            (read as in :mod:`workbench.locate.memories`).
        prompt_tokens / prompt_activations: the key's coefficient at every token
            of ``prompt`` (empty without a prompt).
        contexts / negative_contexts: top (most positive / most negative)
            activating corpus positions.
    """

    model: str
    layer: int
    key: int
    value_norm: float
    promotes: list[TokenScore]
    demotes: list[TokenScore]
    prompt: str | None = None
    prompt_tokens: list[str] = field(default_factory=list)
    prompt_activations: list[float] = field(default_factory=list)
    contexts: list[KeyContext] = field(default_factory=list)
    negative_contexts: list[KeyContext] = field(default_factory=list)
    corpus: dict = field(default_factory=dict)

    def to_pandas(self):
        """One row per context (sign column says which list)."""
        import pandas as pd

        rows = [{"sign": "+", **c.to_dict()} for c in self.contexts]
        rows += [{"sign": "-", **c.to_dict()} for c in self.negative_contexts]
        return pd.DataFrame(rows)


def _context(model: Model, texts: list[str], encoded: dict[int, list[int]], value: float, where: int,
             max_tokens: int, before: int = 16, after: int = 4) -> KeyContext | None:
    if not torch.isfinite(torch.tensor(value)):
        return None  # fewer valid positions than top_n
    ti, pos = divmod(int(where), max_tokens)
    if ti not in encoded:
        encoded[ti] = model.encode(texts[ti])[:max_tokens]
    ids = encoded[ti]
    left = model.tokenizer.decode(ids[max(0, pos - before) : pos], skip_special_tokens=True)
    right = model.tokenizer.decode(ids[pos + 1 : pos + 1 + after], skip_special_tokens=True)
    token = model.tokenizer.decode([ids[pos]])
    prefix = "..." if pos - before > 0 else ""
    return KeyContext(activation=float(value), text_index=ti, position=pos, token=token,
                      text=f"{prefix}{left}⟦{token}⟧{right}...")


def key_profile(
    model: Model,
    layer: int,
    key: int,
    *,
    prompt: str | None = None,
    n_texts: int = DEFAULT_TEXTS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    top_n: int = 10,
    tokens_per_key: int = 10,
    cancel: CancelToken | None = None,
) -> KeyProfile:
    """Everything about one FFN key: what it writes, where it fires.

    The first call for a layer reads ``n_texts`` corpus texts (about a minute
    on Gemma 3 270M, 2 CPU cores, at the default) and caches the contexts of all
    keys of that layer; later calls for that layer are instant.

    Args:
        model: a loaded model.
        layer: the FFN layer (negative counts from the end).
        key: the key index, ``0..d_mlp-1``.
        prompt: optionally, a prompt to show the key's activation over.
        n_texts, max_tokens, top_n: corpus pass settings (see :func:`top_contexts`).
        tokens_per_key: tokens listed for the value vector.

    Raises:
        WorkbenchError: layer or key out of range.

    Example:
        >>> p = key_profile(model, -2, 7, prompt="The Eiffel Tower is in", n_texts=50)
        >>> len(p.prompt_activations) == len(p.prompt_tokens)
        True
    """
    layer = model.layer_index(layer)
    key = key_index(model, key)
    logits = value_logits(model, layer, [key])[0]
    value_norm = float(model.roles.value_vectors(model.bridge, layer)[key].norm())
    prompt_tokens: list[str] = []
    prompt_acts: list[float] = []
    if prompt is not None:
        tokens = check_prompt(model, prompt)
        prompt_tokens = model.str_tokens(tokens)
        prompt_acts = [float(x) for x in key_coefficients(model, tokens, [layer])[layer][:, key]]
    ctx = top_contexts(model, layer, n_texts=n_texts, max_tokens=max_tokens, top_n=top_n, cancel=cancel)[layer]
    texts = wiki_texts("stats", limit=n_texts)
    cache: dict[int, list[int]] = {}
    pos = [_context(model, texts, cache, v, w, max_tokens)
           for v, w in zip(ctx.top_values[key].tolist(), ctx.top_where[key].tolist())]
    negs = [_context(model, texts, cache, v, w, max_tokens)
            for v, w in zip(ctx.bottom_values[key].tolist(), ctx.bottom_where[key].tolist())]
    return KeyProfile(
        model=model.name, layer=layer, key=key, value_norm=value_norm,
        promotes=top_tokens(model, logits, tokens_per_key),
        demotes=top_tokens(model, logits, tokens_per_key, largest=False),
        prompt=prompt, prompt_tokens=prompt_tokens, prompt_activations=prompt_acts,
        contexts=[c for c in pos if c is not None], negative_contexts=[c for c in negs if c is not None],
        corpus={"name": CORPUS_NAME, "split": "stats", "n_texts": ctx.n_texts, "max_tokens": max_tokens},
    )
