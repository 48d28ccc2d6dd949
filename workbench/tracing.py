"""Causal tracing (Meng et al. 2022): where does the model recall a fact?

Run the prompt once clean and ``samples`` times with Gaussian noise on the
subject's token embeddings; then, for every (token, layer), put back the clean
state there and see how much of the clean answer's probability comes back.

* ``"resid"``: restore the block output (residual stream) at (token, layer).
* ``"mlp"`` / ``"attn"``: restore what the FFN / attention adds to the residual
  at that token, for a window of ``window`` layers centred on the layer (clipped
  to the model, as ROME does: layers ``[l - window//2, l + ceil(window/2))``).

The score of a cell is the mean over the corrupted copies of p(clean answer's
first token); its *indirect effect* is score minus the corrupted probability.

How it is made fast (the straightforward way runs one full forward pass of
``1 + samples`` sequences, with logits at every position, per kind, token and
layer; :func:`trace_reference` does exactly that and the tests compare):

1. Restoring at (t, l) cannot change layers below ``l`` (below the window's
   first layer for mlp/attn), so each restored run starts from the corrupted
   run's residual stream entering that layer and only runs the blocks above it
   (:class:`BlockRunner` calls the bridge's blocks with the keyword arguments
   the model itself passed them — masks, rotary tables — captured once).
2. Tokens before the subject see no noise (attention is causal), so restoring
   there is a no-op: those cells equal the corrupted probability, no run needed.
3. Many (token, layer) cells share one batched forward.
4. Only the last position is unembedded (vocabularies run to 262k entries).

Example:
    >>> import workbench as wb
    >>> model = wb.load_model()
    >>> r = wb.trace(model, wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris"))
    >>> r.answer, round(r.clean_prob, 2)
    (' Paris', 0.76)
    >>> r.to_pandas().sort_values("score").tail(1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.facts import ASSETS, Fact
from workbench.model import Model, StopForward
from workbench.progress import CancelToken, Cancelled, progress
from workbench.results import Result

KINDS = ("resid", "mlp", "attn")
#: Below this clean probability a trace mostly measures noise.
LOW_CLEAN_PROB = 0.1


# -- results -------------------------------------------------------------------------


@dataclass
class TraceResult(Result):
    """Scores of a causal trace or an activation-patching sweep.

    Attributes:
        model: model name.
        prompt: the prompt as traced (subject filled in).
        subject: the corrupted subject (trace) or a description of the corrupt prompt (patch).
        tokens: the prompt's tokens as text, one per row of the score grids.
        subject_range: ``[start, end)`` token positions of the subject (the corrupted span).
        answer: the model's clean top-1 next token; scores are its probability.
        answer_id: its token id.
        clean_prob: p(answer) on the clean prompt.
        corrupted_prob: p(answer) with noise on the subject (mean over copies), or on the
            corrupt prompt for :func:`~workbench.patching.patch`.
        scores: ``{kind: [tokens, layers]}`` p(answer) after restoring that cell.
        method: ``"trace"`` or ``"patch"``.
        samples, noise, noise_std, window, seed: the settings used.
        seconds: wall time.
        warnings: things that make the result less trustworthy.
    """

    model: str
    prompt: str
    subject: str
    tokens: list[str]
    subject_range: list[int]
    answer: str
    answer_id: int
    clean_prob: float
    corrupted_prob: float
    scores: dict[str, np.ndarray]
    method: str = "trace"
    samples: int = 0
    noise: float = 0.0
    noise_std: float = 0.0
    window: int = 0
    seed: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return list(self.scores)

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.scores.values())).shape[1]) if self.scores else 0

    @property
    def indirect_effects(self) -> dict[str, np.ndarray]:
        """``{kind: [tokens, layers]}`` score minus the corrupted probability."""
        return {k: np.asarray(v) - self.corrupted_prob for k, v in self.scores.items()}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["indirect_effects"] = {k: v.tolist() for k, v in self.indirect_effects.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TraceResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a saved JSON file)."""
        kwargs = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kwargs["scores"] = {k: np.asarray(v, dtype=float) for k, v in d["scores"].items()}
        return cls(**kwargs)

    def to_pandas(self):
        """Long format: one row per (token, layer, kind)."""
        import pandas as pd

        start, end = self.subject_range
        rows = []
        for kind, grid in self.scores.items():
            grid = np.asarray(grid)
            for t, token in enumerate(self.tokens):
                for layer in range(grid.shape[1]):
                    rows.append({
                        "position": t, "token": token, "subject": start <= t < end, "layer": layer,
                        "kind": kind, "score": float(grid[t, layer]),
                        "indirect_effect": float(grid[t, layer] - self.corrupted_prob),
                    })
        return pd.DataFrame(rows)


# -- inputs ----------------------------------------------------------------------------


def _as_prompt_and_subject(fact, subject: str | None) -> tuple[str, str, str | None]:
    """(filled prompt, subject, true object or None) from any accepted fact form."""
    if isinstance(fact, Fact):
        return fact.text, fact.subject, fact.target_true
    if isinstance(fact, (tuple, list)) and len(fact) == 2 and all(isinstance(x, str) for x in fact):
        prompt, subject = fact
    elif isinstance(fact, str):
        prompt = fact
    else:
        raise WorkbenchError(
            f"trace a workbench.Fact, a (prompt, subject) pair, or a prompt with subject=...; got {type(fact).__name__}"
        )
    if not isinstance(subject, str) or not subject.strip():
        raise WorkbenchError("no subject given: pass subject=... (the words to corrupt)")
    if not prompt.strip():
        raise WorkbenchError("empty prompt")
    if "{}" in prompt:
        prompt = prompt.replace("{}", subject, 1)
    return prompt, subject, None


def subject_span(model: Model, ids: Sequence[int], prompt: str, subject: str) -> tuple[int, int]:
    """Token positions ``[start, end)`` covering the first occurrence of ``subject``.

    A token that also carries a leading space or neighbouring characters counts as
    part of the subject ("▁Eiffel" covers "Eiffel"). Uses the tokenizer's character
    offsets when it has them, else decodes token by token.

    Raises:
        WorkbenchError: the subject is not in the prompt (the message shows the tokens).

    Example:
        >>> ids = model.encode("The Eiffel Tower is in")
        >>> subject_span(model, ids, "The Eiffel Tower is in", "Eiffel Tower")
        (2, 4)
    """
    ids = list(ids)
    # Surrounding spaces are no part of the subject; the tokens that carry them
    # (Gemma's "▁Eiffel") are found from the characters they cover.
    subject = subject.strip()
    text_start = prompt.find(subject)
    if text_start < 0:
        raise WorkbenchError(
            f"subject {subject!r} is not in the prompt {prompt!r} (tokens: {model.str_tokens(ids)})"
        )
    text_end = text_start + len(subject)
    spans = _char_spans(model, ids, prompt)
    covering = [i for i, (a, b) in enumerate(spans) if b > a and a < text_end and b > text_start]
    if not covering:
        raise WorkbenchError(
            f"subject {subject!r} is in the prompt but no token covers it (tokens: {model.str_tokens(ids)})"
        )
    return covering[0], covering[-1] + 1


def _char_spans(model: Model, ids: list[int], prompt: str) -> list[tuple[int, int]]:
    tok = model.tokenizer
    try:
        enc = tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            return [tuple(map(int, o)) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        pass  # slow tokenizers have no offsets
    special = set(getattr(tok, "all_special_ids", []) or [])
    spans, pos = [], 0
    for i in ids:
        piece = "" if i in special else tok.decode([i])
        found = prompt.find(piece, pos) if piece else -1
        if found < 0 or found > pos + 1:  # keep alignment when a piece does not round-trip
            spans.append((pos, pos + len(piece)) if piece else (pos, pos))
            pos += len(piece)
        else:
            spans.append((found, found + len(piece)))
            pos = found + len(piece)
    return spans


def _check_settings(samples: int, window: int, noise: float, kinds) -> tuple[str, ...]:
    if not isinstance(samples, int) or samples < 1:
        raise WorkbenchError(f"samples must be a whole number >= 1, got {samples!r}")
    if not isinstance(window, int) or window < 1:
        raise WorkbenchError(f"window must be a whole number of layers >= 1, got {window!r}")
    if not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise WorkbenchError(f"noise must be a finite number >= 0, got {noise!r}")
    return _check_kinds(kinds)


def _check_kinds(kinds) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = KINDS if kinds == "all" else (kinds,)
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise WorkbenchError(f"unknown kind {bad[0] if bad else None!r}; choose from {', '.join(KINDS)} or 'all'")
    return tuple(dict.fromkeys(kinds))


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Layers ``[lo, hi)`` restored for an mlp/attn cell at ``layer`` (ROME's window).

    Example:
        >>> window_layers(0, 10, 18), window_layers(9, 10, 18), window_layers(17, 10, 18)
        ((0, 5), (4, 14), (12, 18))
    """
    return max(0, layer - window // 2), min(n_layers, layer + (window + 1) // 2)


# -- running blocks from any layer -------------------------------------------------------

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


# -- noise scale -----------------------------------------------------------------------

_STD_CACHE: dict[tuple[str, str], float] = {}
KNOWN_1000 = ASSETS / "data" / "known_1000.json"


def embedding_std(model: Model, subjects: Sequence[str] | None = None) -> float:
    """Standard deviation of subject-token embeddings as they enter block 0.

    Like ROME, over all elements of the embedding rows of the tokens of a fixed
    set of subjects: by default the 1,209 subjects of ROME's ``known_1000``
    (each tokenised with a leading space, as subjects mostly appear mid-sentence),
    so the noise scale is a property of the model, not of the prompt. Falls back
    to the embedding matrix's rows over the whole vocabulary when the data set is
    absent. Cached per model.

    Example:
        >>> round(embedding_std(model), 3)  # doctest: +SKIP
        0.986
    """
    if subjects is None:
        if KNOWN_1000.exists():
            from workbench.facts import read_facts

            subjects = sorted({f.subject for f in read_facts(KNOWN_1000)})
            key_name = "known_1000"
        else:
            subjects, key_name = [], "vocabulary"
    else:
        subjects = list(subjects)
        key_name = "|".join(subjects)
    key = (model.fingerprint, key_name)
    if key in _STD_CACHE:
        return _STD_CACHE[key]
    if subjects:
        counts: dict[int, int] = {}
        for s in subjects:
            for i in model.encode(" " + s.strip(), prompt=False):
                counts[i] = counts.get(i, 0) + 1
        ids = list(counts)
        weights = torch.tensor([counts[i] for i in ids], dtype=torch.float64)
    else:
        ids = list(range(model.tokenizer.vocab_size))
        weights = torch.ones(len(ids), dtype=torch.float64)
    rows = _embed_rows(model, ids).double()
    # std over all elements, each token weighted by how often it occurs in the subjects.
    w = weights[:, None].expand_as(rows).to(rows.device)
    mean = (rows * w).sum() / w.sum()
    var = ((rows - mean) ** 2 * w).sum() / (w.sum() - 1)
    value = float(var.sqrt())
    _STD_CACHE[key] = value
    return value


def _embed_rows(model: Model, ids: list[int], chunk: int = 4096) -> Float[Tensor, "n d_model"]:
    """Embeddings of single tokens as they enter block 0 (read at the embed hook,
    so family-specific scaling such as Gemma's sqrt(d_model) is included)."""
    out = []
    for i in range(0, len(ids), chunk):
        batch = torch.tensor(ids[i : i + chunk], device=model.device)[:, None]
        got = {}

        def grab(x, hook):
            got["x"] = x.detach()
            raise StopForward

        try:
            with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(model.roles.hook("embed"), grab)]):
                model.hf_model.base_model(input_ids=batch, use_cache=False)
        except StopForward:
            pass
        out.append(got["x"][:, 0])
    return torch.cat(out)


def make_noise(samples: int, n_tokens: int, d_model: int, std: float, seed: int) -> Float[Tensor, "samples n_tokens d_model"]:
    """The Gaussian noise added to the subject's embeddings (fixed seed, CPU generator
    so the same seed gives the same noise on any device)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(samples, n_tokens, d_model, generator=gen) * std


# -- the sweep -------------------------------------------------------------------------


def sweep(
    runner: BlockRunner,
    corrupted: list[Tensor],
    kinds: Sequence[str],
    window: int,
    answer_id: int,
    first_changed: int,
    corrupted_prob: float,
    *,
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
    desc: str = "tracing",
) -> dict[str, np.ndarray]:
    """Score every (kind, token, layer) cell by restoring clean states into corrupted runs.

    Args:
        runner: the clean run (states to restore, block arguments).
        corrupted: ``corrupted[s]`` is the corrupted residual ``[copies, pos, d_model]``
            entering block ``s``.
        first_changed: first position whose state differs between clean and corrupted
            runs; earlier cells are no-ops and get ``corrupted_prob`` without a run.
        max_tokens: rows x positions per forward pass (bounds memory).
    """
    model = runner.model
    n_layers, copies, n_pos = model.n_layers, corrupted[0].shape[0], corrupted[0].shape[1]
    scores = {k: np.full((n_pos, n_layers), corrupted_prob, dtype=np.float64) for k in kinds}
    # Group cells by the layer their restored run starts at: one batch per group chunk.
    groups: list[tuple[str, int, list[tuple[int, int]]]] = []
    positions = range(first_changed, n_pos)
    for kind in kinds:
        by_start: dict[int, list[tuple[int, int]]] = {}
        for layer in range(n_layers):
            start = layer + 1 if kind == "resid" else window_layers(layer, window, n_layers)[0]
            cells_here = [(t, layer) for t in positions]
            if kind == "resid" and layer == n_layers - 1:
                # The last block's output at an earlier token reaches nothing: the
                # answer is read at the last token only.
                cells_here = [(t, layer) for t in positions if t == n_pos - 1]
            by_start.setdefault(start, []).extend(cells_here)
        per_run = max(1, max_tokens // (copies * n_pos))
        for start, cells in by_start.items():
            for i in range(0, len(cells), per_run):
                groups.append((kind, start, cells[i : i + per_run]))

    for kind, start, cells in progress(groups, desc=desc, cancel=cancel):
        x = corrupted[start].repeat(len(cells), 1, 1)
        hooks = []
        if kind == "resid":
            for c, (t, _) in enumerate(cells):
                x[c * copies : (c + 1) * copies, t] = runner.resid[start][0, t]
        else:
            hooks = _window_hooks(runner, kind, cells, start, window, copies)
        if start < n_layers:
            hidden = runner.run(start, x, hooks)
        else:  # restoring the last block's output: nothing left to run
            hidden = model.bridge.ln_final(x[:, -1])
        probs = answer_probs(model, hidden, answer_id).view(len(cells), copies).mean(1)
        for (t, layer), p in zip(cells, probs.tolist()):
            scores[kind][t, layer] = p
    return scores


def _window_hooks(runner: BlockRunner, kind: str, cells, start: int, window: int, copies: int):
    """Hooks restoring ``kind`` output at each cell's token, on its window's layers."""
    model = runner.model
    n_layers = model.n_layers
    by_layer: dict[int, tuple[list[int], list[int]]] = {}
    for c, (t, layer) in enumerate(cells):
        lo, hi = window_layers(layer, window, n_layers)
        for j in range(lo, hi):
            rows, pos = by_layer.setdefault(j, ([], []))
            rows.extend(range(c * copies, (c + 1) * copies))
            pos.extend([t] * copies)

    def restore(j: int, rows: list[int], pos: list[int]):
        rows_t = torch.tensor(rows, device=model.device)
        pos_t = torch.tensor(pos, device=model.device)
        clean = runner.acts[kind][j][0, pos_t]

        def fn(x, hook):
            x = x.clone()
            x[rows_t, pos_t] = clean.to(x.dtype)
            return x
        return fn

    return [(model.roles.hook(kind, j), restore(j, *rp)) for j, rp in sorted(by_layer.items()) if j >= start]


def _warnings(answer: str, target_true: str | None, clean_prob: float, corrupted_prob: float) -> list[str]:
    out = []
    if clean_prob < LOW_CLEAN_PROB:
        out.append(
            f"the clean answer {answer!r} has p={clean_prob:.3f} < {LOW_CLEAN_PROB}: the model is unsure, "
            "so restored scores are mostly noise"
        )
    if target_true is not None and not target_true.strip().startswith(answer.strip()) and answer.strip():
        out.append(f"the model's top-1 {answer!r} does not begin the fact's object {target_true!r}: tracing the model's answer")
    if clean_prob >= LOW_CLEAN_PROB and corrupted_prob > 0.5 * clean_prob:
        out.append(
            f"corrupting the subject keeps p={corrupted_prob:.3f} of clean {clean_prob:.3f}: the answer barely "
            "depends on the subject here (try more noise)"
        )
    return out


def trace(
    model: Model,
    fact: Fact | tuple[str, str] | str,
    *,
    subject: str | None = None,
    kinds: str | Sequence[str] = KINDS,
    samples: int = 10,
    noise: float = 3.0,
    noise_std: float | None = None,
    window: int = 10,
    seed: int = 0,
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
) -> TraceResult:
    """Causal tracing of one fact: which hidden states carry it to the answer.

    Args:
        model: a loaded model.
        fact: a :class:`~workbench.facts.Fact`, a ``(prompt, subject)`` pair (the prompt
            may hold ``{}`` where the subject goes), or a prompt with ``subject=``.
        subject: the words to corrupt, when ``fact`` is a bare prompt.
        kinds: any of ``"resid"``, ``"mlp"``, ``"attn"``, or ``"all"``.
        samples: corrupted copies N (the noise differs per copy).
        noise: noise scale in units of the subject-embedding std.
        noise_std: that std; by default :func:`embedding_std` (fixed subject set).
        window: layers restored around each layer for mlp/attn.
        seed: noise seed.
        cancel: a token the UI can trip to stop early (raises ``Cancelled``).
        max_tokens: sequence-positions per batched forward (memory bound).

    Returns:
        A :class:`TraceResult`.

    Raises:
        WorkbenchError: subject not in the prompt, prompt longer than the context,
            ``samples`` or ``window`` below 1, unknown kind.

    Example:
        >>> r = trace(model, ("The {} is located in the city of", "Eiffel Tower"), kinds="mlp", samples=5)
        >>> r.scores["mlp"].shape  # (tokens, layers)
        (10, 18)
    """
    started = time.perf_counter()
    kinds = _check_settings(samples, window, noise, kinds)
    prompt, subject, target_true = _as_prompt_and_subject(fact, subject)
    tokens = model.tokens(prompt)
    ids = tokens[0].tolist()
    begin, end = subject_span(model, ids, prompt, subject)
    std = embedding_std(model) if noise_std is None else float(noise_std)

    runner = BlockRunner(model, tokens)
    clean_hidden = model.bridge.ln_final(runner.resid[model.n_layers][:, -1])
    with torch.no_grad():
        clean_logp = model.logits_from_hidden(clean_hidden).float().log_softmax(-1)[0]
    answer_id = int(clean_logp.argmax())
    clean_prob = float(clean_logp[answer_id].exp())

    eps = make_noise(samples, end - begin, model.d_model, noise * std, seed)
    x0 = runner.resid[0].repeat(samples, 1, 1)
    x0[:, begin:end] += eps.to(x0.device, x0.dtype)
    corrupted_hidden, corrupted = runner.run(0, x0, keep=True)
    corrupted_prob = float(answer_probs(model, corrupted_hidden, answer_id).mean())

    scores = sweep(runner, corrupted, kinds, window, answer_id, begin, corrupted_prob,
                   cancel=cancel, max_tokens=max_tokens, desc=f"tracing {subject}")
    answer = model.tokenizer.decode([answer_id])
    return TraceResult(
        model=model.name, prompt=prompt, subject=subject, tokens=model.str_tokens(ids),
        subject_range=[begin, end], answer=answer, answer_id=answer_id, clean_prob=clean_prob,
        corrupted_prob=corrupted_prob, scores=scores, method="trace", samples=samples,
        noise=float(noise), noise_std=std, window=window, seed=seed,
        seconds=time.perf_counter() - started,
        warnings=_warnings(answer, target_true, clean_prob, corrupted_prob),
    )


# -- the straightforward reference ------------------------------------------------------


def trace_reference(
    model: Model,
    fact: Fact | tuple[str, str] | str,
    *,
    subject: str | None = None,
    kinds: str | Sequence[str] = KINDS,
    samples: int = 10,
    noise: float = 3.0,
    noise_std: float | None = None,
    window: int = 10,
    seed: int = 0,
    cells: Sequence[tuple[int, int]] | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, np.ndarray]:
    """Causal tracing the slow, obvious way, for checking :func:`trace`.

    As ROME's reference code: per (kind, token, layer) one forward pass of the clean
    prompt plus ``samples`` corrupted copies through the whole model, noise added at
    the embedding hook, clean states copied from row 0 by hooks, logits at every
    position. Same noise as :func:`trace` for the same seed.

    Args:
        cells: only these ``(token, layer)`` cells (others are NaN); all by default.

    Returns:
        ``{kind: [tokens, layers]}`` scores.
    """
    kinds = _check_settings(samples, window, noise, kinds)
    prompt, subject, _ = _as_prompt_and_subject(fact, subject)
    tokens = model.tokens(prompt)
    begin, end = subject_span(model, tokens[0].tolist(), prompt, subject)
    std = embedding_std(model) if noise_std is None else float(noise_std)
    eps = make_noise(samples, end - begin, model.d_model, noise * std, seed).to(model.device)
    with torch.no_grad():
        answer_id = int(model.bridge(tokens)[0, -1].argmax())
    batch = tokens.repeat(samples + 1, 1)

    def add_noise(x, hook):
        x = x.clone()
        x[1:, begin:end] += eps.to(x.dtype)
        return x

    def restore(t: int):
        def fn(x, hook):
            x = x.clone()
            x[1:, t] = x[0, t]
            return x
        return fn

    n_pos, n_layers = tokens.shape[1], model.n_layers
    todo = list(cells) if cells is not None else [(t, l) for t in range(n_pos) for l in range(n_layers)]
    out = {k: np.full((n_pos, n_layers), np.nan) for k in kinds}
    roles = model.roles
    for kind, t, layer in progress([(k, t, l) for k in kinds for t, l in todo], desc="reference trace", cancel=cancel):
        if kind == "resid":
            names = [roles.hook("resid", layer)]
        else:
            lo, hi = window_layers(layer, window, n_layers)
            names = [roles.hook(kind, j) for j in range(lo, hi)]
        hooks = [(roles.hook("embed"), add_noise)] + [(n, restore(t)) for n in names]
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            logits = model.bridge(batch)
        probs = logits[1:, -1].float().softmax(-1)[:, answer_id]
        out[kind][t, layer] = float(probs.mean())
    return out


# -- average indirect effect -------------------------------------------------------------

GROUPS = (
    "first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens", "last token",
)


def token_groups(subject_range: Sequence[int], n_tokens: int) -> dict[str, list[int]]:
    """Positions of each of ROME's six token groups (a group may be empty).

    Example:
        >>> token_groups([2, 5], 10)["middle subject tokens"]
        [3]
    """
    begin, end = subject_range
    last = n_tokens - 1
    return {
        "first subject token": [begin],
        "middle subject tokens": list(range(begin + 1, end - 1)),
        "last subject token": [end - 1],
        "first subsequent token": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last] if last >= end else [],
    }


@dataclass
class AIEResult(Result):
    """Average indirect effects over many facts, per token group and layer.

    Attributes:
        mean: ``{kind: {group: [layers]}}`` mean indirect effect.
        low, high: the 95% interval of that mean (mean ± 1.96 standard errors).
        counts: facts contributing to each group (a group can be empty for a fact).
        skipped: ``[subject, reason]`` of facts not traced.
    """

    model: str
    kinds: list[str]
    groups: list[str]
    n_layers: int
    n_facts: int
    mean: dict[str, dict[str, list[float]]]
    low: dict[str, dict[str, list[float]]]
    high: dict[str, dict[str, list[float]]]
    counts: dict[str, int]
    mean_clean_prob: float
    mean_corrupted_prob: float
    samples: int
    noise: float
    window: int
    seed: int
    seconds: float
    skipped: list[list[str]] = field(default_factory=list)

    def to_pandas(self):
        """Long format: one row per (kind, group, layer)."""
        import pandas as pd

        return pd.DataFrame([
            {"kind": k, "group": g, "layer": layer, "mean": self.mean[k][g][layer],
             "low": self.low[k][g][layer], "high": self.high[k][g][layer], "n": self.counts[g]}
            for k in self.kinds for g in self.groups for layer in range(self.n_layers)
        ])

    @classmethod
    def from_dict(cls, d: dict) -> AIEResult:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def default_trace_facts(model: Model) -> list[Fact]:
    """Known facts for tracing: ``assets/known_trace_facts.json`` (ROME's known_1000
    filtered to what the default model knows) when there, else known_1000 filtered now."""
    from workbench.facts import filter_known, read_facts

    path = ASSETS / "known_trace_facts.json"
    if path.exists():
        return read_facts(path)
    return list(filter_known(model, read_facts(KNOWN_1000)))


def average_indirect_effect(
    model: Model,
    facts: Sequence[Fact] | None = None,
    *,
    kind: str | Sequence[str] = "mlp",
    samples: int = 10,
    noise: float = 3.0,
    window: int = 10,
    seed: int = 0,
    limit: int | None = None,
    cancel: CancelToken | None = None,
    save: str | Path | None = None,
) -> AIEResult:
    """Trace many facts and average the indirect effects by token group (ROME, Fig. 2).

    Per fact the indirect effect of a group at a layer is the mean over the group's
    tokens; groups a fact lacks (no middle subject tokens, say) leave it out of that
    group's average.

    Args:
        model: a loaded model.
        facts: facts to trace; by default :func:`default_trace_facts`.
        kind: ``"resid"``, ``"mlp"``, ``"attn"``, several of them, or ``"all"``.
        samples, noise, window, seed: as :func:`trace`.
        limit: trace only the first ``limit`` facts.
        cancel: stop early (raises ``Cancelled``).
        save: write the result's JSON there.

    Example:
        >>> aie = average_indirect_effect(model, kind="mlp", samples=5, limit=20)
        >>> aie.to_pandas().groupby("group")["mean"].max()  # doctest: +SKIP
    """
    started = time.perf_counter()
    kinds = _check_settings(samples, window, noise, kind)
    facts = list(default_trace_facts(model) if facts is None else facts)
    if limit is not None:
        facts = facts[:limit]
    if not facts:
        raise WorkbenchError("no facts to trace")
    per_group: dict[str, dict[str, list[np.ndarray]]] = {k: {g: [] for g in GROUPS} for k in kinds}
    clean, corrupted, skipped = [], [], []
    std = embedding_std(model)
    for fact in progress(facts, desc="average indirect effect", cancel=cancel):
        try:
            r = trace(model, fact, kinds=kinds, samples=samples, noise=noise, noise_std=std,
                      window=window, seed=seed, cancel=cancel)
        except Cancelled:
            raise
        except WorkbenchError as exc:
            skipped.append([fact.subject, str(exc)])
            continue
        clean.append(r.clean_prob)
        corrupted.append(r.corrupted_prob)
        groups = token_groups(r.subject_range, len(r.tokens))
        for k, ie in r.indirect_effects.items():
            for g, pos in groups.items():
                if pos:
                    per_group[k][g].append(ie[pos].mean(0))
    if not clean:
        raise WorkbenchError(f"none of the {len(facts)} facts could be traced (first problem: {skipped[0][1]})")
    mean, low, high = ({k: {} for k in kinds} for _ in range(3))
    for k in kinds:
        for g in GROUPS:
            rows = np.array(per_group[k][g]) if per_group[k][g] else np.full((1, model.n_layers), np.nan)
            m = rows.mean(0)
            half = 1.96 * rows.std(0, ddof=1) / math.sqrt(len(rows)) if len(rows) > 1 else np.full_like(m, np.nan)
            mean[k][g], low[k][g], high[k][g] = m.tolist(), (m - half).tolist(), (m + half).tolist()
    result = AIEResult(
        model=model.name, kinds=list(kinds), groups=list(GROUPS), n_layers=model.n_layers,
        n_facts=len(clean), mean=mean, low=low, high=high,
        counts={g: len(per_group[kinds[0]][g]) for g in GROUPS},
        mean_clean_prob=float(np.mean(clean)), mean_corrupted_prob=float(np.mean(corrupted)),
        samples=samples, noise=float(noise), window=window, seed=seed,
        seconds=time.perf_counter() - started, skipped=skipped,
    )
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        result.to_json(save)
    return result


def patch(model: Model, clean_prompt: str, corrupt_prompt: str, **kwargs) -> TraceResult:
    """Activation patching between two same-length prompts: :func:`workbench.patching.patch`
    (re-exported here so the package root imports the locator from one module)."""
    from workbench.patching import patch as _patch

    return _patch(model, clean_prompt, corrupt_prompt, **kwargs)
