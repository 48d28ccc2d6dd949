"""Shared machinery of the locate-then-edit methods (ROME, MEMIT, PMET, FT).

* :func:`context_prefixes` — short generated texts put in front of the edit
  prompt, so that keys and targets do not depend on one exact wording.
* :func:`build_batch` — the prefixed prompts of facts as token ids, with the
  position of the last subject token and of every target token.
* :func:`capture` — activations at the last subject token (averaged over the
  prefixes), optionally with virtual weight updates applied through hooks.
* :class:`SuffixRunner` — runs only the positions a δ at the last subject token can
  change, for the v* search (:mod:`~workbench.editing.targets`).

Everything here reads the model through hooks and never writes a weight;
``commit_weights`` does that, once.

Example:
    >>> prefixes = context_prefixes(model, n=5)                         # doctest: +SKIP
    >>> batch = build_batch(model, [fact], prefixes)                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core import activations
from workbench.core.activations import hooked, virtual_update_hooks  # noqa: F401 (virtual_update_hooks re-exported)
from workbench.runtime.cache import cache_dir, write_file_atomically
from workbench.runtime.lowp import LowPrecisionBlocks
from workbench.editing.search import SearchParams, search_in_bfloat16
from workbench.editing.weights import as_matrix, param_name, to_stored, value_param  # noqa: F401 (re-exported)
from workbench.errors import WorkbenchError
from workbench.facts import Fact, top_begins_true_object
from workbench.core.model import Model, StopForward
from workbench.probing import target_ids
from workbench.runtime.unembed import MixedUnembed

log = logging.getLogger(__name__)

_STARTERS = ("The", "Therefore", "Because", "I", "You", "It", "In", "However", "When", "She")


# -- context prefixes --------------------------------------------------------------------
def context_prefixes(
    model: Model, n: int = 10, *, min_tokens: int = 5, max_tokens: int = 10, seed: int = 0
) -> list[str]:
    """``n`` short texts sampled from the model, each ending in ``". "``; cached per model.

    ROME averages keys and optimises targets over the edit prompt preceded by
    such prefixes, so the edit holds for the subject in other contexts too.

    Example:
        >>> context_prefixes(model, n=2)                       # doctest: +SKIP
        ['The first time I saw the movie. ', 'Therefore, the court ruled. ']
    """
    from workbench.editing.handle import unedited
    from workbench.probing import generate

    if n <= 0:
        return []
    path = cache_dir("prefixes") / f"{model.fingerprint}_{n}_{min_tokens}-{max_tokens}_s{seed}.json"
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            reason = _prefixes_problem(model, data, n, max_tokens)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = f"unreadable ({type(exc).__name__})"
        if reason is None:
            return data
        # Every later edit would read these prefixes: generate them again (overwritten below).
        log.warning("cached context prefixes %s are unusable (%s); generating them again", path, reason)
    out = []
    # Cached under the unedited model's fingerprint: generated with every edit set aside.
    with unedited(model):
        for i in range(n):
            start = _STARTERS[i % len(_STARTERS)]
            length = min_tokens + i % (max_tokens - min_tokens + 1)
            text = start + generate(model, start, max_new_tokens=length, do_sample=True, top_k=5, seed=seed + i)
            # Braces would break str.format-style templates; newlines look odd in a prompt.
            text = " ".join(text.replace("{", "(").replace("}", ")").split())
            out.append(text.rstrip(".") + ". ")
    write_file_atomically(path, json.dumps(out).encode())
    return out


def _prefixes_problem(model: Model, data, n: int, max_tokens: int) -> str | None:
    """Why a cached list of context prefixes is not one :func:`context_prefixes` could have made, or None."""
    if not isinstance(data, list) or len(data) != n:
        return f"expected a list of {n} prefixes"
    # A starter word, at most max_tokens generated tokens and ". ": decoded and encoded again,
    # the text may take some more tokens, never dozens more.
    limit = 4 * max_tokens + 8
    for text in data:
        if not isinstance(text, str) or not text.endswith(". ") or not text[:-2].strip():
            return "a prefix is not a short sentence ending in '. '"
        if any(c in text for c in "{}\n"):
            return "a prefix holds a brace or a newline"
        # Characters first: a huge entry is refused before it is tokenised.
        if len(text) > 32 * limit or len(model.encode(text, prompt=False)) > limit:
            return f"a prefix is longer than {limit} tokens"
    return None


# -- batches -----------------------------------------------------------------------------
@dataclass
class Batch:
    """Token sequences of (fact, context) pairs, right-padded, with bookkeeping.

    ``fact_of[i]`` is the fact index of row i; ``subject_pos[i]`` the position
    of its last subject token; ``target_pos[i]``/``target_tok[i]`` the positions
    predicting the new object's tokens and those tokens (empty for KL rows);
    ``is_kl[i]`` marks the "{subject} is a" rows.
    """

    ids: Tensor
    mask: Tensor
    fact_of: list[int]
    subject_pos: list[int]
    target_pos: list[list[int]] = field(default_factory=list)
    target_tok: list[list[int]] = field(default_factory=list)
    is_kl: list[bool] = field(default_factory=list)

    def rows(self, kl: bool | None = None) -> list[int]:
        return [i for i in range(len(self.fact_of)) if kl is None or self.is_kl[i] == kl]


def subject_end(model: Model, text: str, end_char: int) -> int:
    """Index of the token that holds character ``end_char - 1`` of ``text`` (with BOS)."""
    return len(model.encode(text[:end_char])) - 1


def build_batch(
    model: Model, facts: Sequence[Fact], prefixes: Sequence[str], *, target: str = "new",
    kl_prompt: str | None = "{} is a",
    with_targets: bool = True,
) -> Batch:
    """The bare and prefixed edit prompts of every fact (+ one KL prompt per fact).

    Args:
        facts: the facts.
        prefixes: context prefixes (the bare prompt is always included first).
        target: ``"new"`` or ``"true"`` — which object's tokens to append.
        kl_prompt: template of the prompt whose next-token distribution must not move
            (None for none).
        with_targets: append the object tokens (for the NLL); keys do not need them.
    """
    seqs, fact_of, subj, tpos, ttok, is_kl = [], [], [], [], [], []
    for fi, fact in enumerate(facts):
        obj = fact.target_new if target == "new" else fact.target_true
        for prefix in ("", *prefixes):
            text = prefix + fact.text
            end = len(prefix) + fact.prompt.index("{}") + len(fact.subject)
            ids = model.encode(text)
            s = subject_end(model, text, end)
            if s >= len(ids) or s < 0:
                raise WorkbenchError(f"cannot locate the subject {fact.subject!r} in the tokens of {text!r}")
            tids = target_ids(model, fact.text, obj) if with_targets else []
            seqs.append(ids + tids[:-1])
            tpos.append(list(range(len(ids) - 1, len(ids) - 1 + len(tids))))
            ttok.append(tids)
            fact_of.append(fi)
            subj.append(s)
            is_kl.append(False)
        if kl_prompt:
            text = kl_prompt.format(fact.subject)
            ids = model.encode(text)
            seqs.append(ids)
            fact_of.append(fi)
            subj.append(subject_end(model, text, kl_prompt.index("{}") + len(fact.subject)))
            tpos.append([len(ids) - 1])
            ttok.append([])
            is_kl.append(True)
    width = max(len(s) for s in seqs)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return Batch(ids.to(model.device), mask.to(model.device), fact_of, subj, tpos, ttok, is_kl)


# -- hooks -------------------------------------------------------------------------------
# virtual_update_hooks lives with the other ways into activations (workbench/core/activations.py);
# imported above, so ``from workbench.editing.optimize import virtual_update_hooks`` still works.


def capture(
    model: Model, batch: Batch, names: Sequence[str], *, extra_hooks: Sequence[tuple] = (), n_facts: int | None = None,
    chunk: int = 64,
) -> dict[str, Float[Tensor, "fact d"]]:
    """Activations at each non-KL row's last subject token, averaged per fact.

    Returns ``{hook_name: [n_facts, d]}`` in float64.
    """
    n_facts = n_facts if n_facts is not None else max(batch.fact_of) + 1
    rows_all = batch.rows(kl=False)
    sums: dict[str, Tensor] = {}
    counts = torch.zeros(n_facts, dtype=torch.float64)
    for start in range(0, len(rows_all), chunk):
        rows = rows_all[start : start + chunk]
        idx = torch.tensor([batch.fact_of[r] for r in rows])
        pos = torch.tensor([batch.subject_pos[r] for r in rows])
        got = activations.capture(model, batch.ids[rows], names, mask=batch.mask[rows], positions=pos,
                                  extra_hooks=extra_hooks)
        for n in names:
            vals = got[n].double().cpu()
            if n not in sums:
                sums[n] = torch.zeros(n_facts, vals.shape[-1], dtype=torch.float64)
            sums[n].index_add_(0, idx, vals)
        counts.index_add_(0, idx, torch.ones(len(rows), dtype=torch.float64))
    return {n: s / counts[:, None].clamp(min=1) for n, s in sums.items()}


def _add_at(rows: Tensor, cols: Tensor, vec: Tensor):
    def hook(acts, hook=None):
        add = torch.zeros_like(acts)
        add[rows, cols] = vec.to(acts.dtype)
        return acts + add
    return hook


class SuffixRunner:
    """Runs a batch's positions before the last subject token once, then only the rest.

    A δ added at the last subject token cannot change any earlier position
    (attention is causal), so the v* search re-runs just the suffix each step,
    on top of a KV cache of the prefix — about 2.4× less work per forward
    (measured: 0.43 s → 0.18 s for the 12 rows of one gemma-3-270m fact).
    Rows are left-padded so that every row's last subject token sits in the
    same column; explicit position ids keep each row's positions as they were.

    With ``start_block`` > 0 the blocks below it are not run either: nothing
    the search changes reaches them, so their output on the suffix is computed
    once and handed to block ``start_block`` every step (gemma-3-270m, 12 rows,
    2 CPU threads: the suffix forward took 0.148 s running all 18 blocks and
    0.133 s from block 4, ROME's layer; backward never reached them anyway).
    Hooks in the extra hooks that
    sit below ``start_block`` act once, in that first pass, as they should:
    their effect on the suffix is the same every step.

    ``hidden(hooks)[i, j]`` is the final hidden state of row i at its original
    position ``subject_pos[i] + j``.
    """

    def __init__(self, model: Model, batch: Batch, extra_hooks: Sequence[tuple] = (), *, start_block: int = 0) -> None:
        self.model = model
        self.extra_hooks = list(extra_hooks)
        lens = batch.mask.sum(1).tolist()
        subj = batch.subject_pos
        self.split = max(subj)
        shift = [self.split - s for s in subj]
        width = max(n + sh for n, sh in zip(lens, shift))
        n = len(lens)
        pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, width), int(pad), dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        for i in range(n):
            ids[i, shift[i] : shift[i] + lens[i]] = batch.ids[i, : lens[i]].cpu()
            mask[i, shift[i] : shift[i] + lens[i]] = 1
            pos[i, shift[i] : shift[i] + lens[i]] = torch.arange(lens[i])
        self.ids, self.mask, self.pos = ids.to(model.device), mask.to(model.device), pos.to(model.device)
        self.cache = None
        self._cache_kwarg = model.cache_kwarg
        if self.split > 0:
            with torch.no_grad(), hooked(model, self.extra_hooks):
                out = model.hf_model.base_model(
                    input_ids=self.ids[:, : self.split], attention_mask=self.mask[:, : self.split],
                    position_ids=self.pos[:, : self.split], use_cache=True,
                )
            self.cache = out.past_key_values
        layers = getattr(model.hf_model.base_model, "layers", None)
        # Skipping needs the HF decoder layers to be the bridge's blocks, in order (true of the
        # families we load); anything else runs every block.
        self.start_block = start_block if (
            start_block > 0 and layers is not None and len(layers) == model.n_layers
            and all(layers[i] is model.bridge.blocks[i] for i in range(start_block))
        ) else 0
        self._layers = layers
        self._below: object = None
        if self.start_block:
            self._below = self._output_of_block(self.start_block - 1)

    def select(self, rows: Sequence[int]) -> SuffixRunner:
        """A runner for only ``rows`` of this one's batch, sharing its prefix cache and the
        blocks' output below ``start_block`` (no forward pass).

        Example:
            >>> smaller = runner.select([0, 1, 2])          # doctest: +SKIP
        """
        index = torch.tensor(list(rows), dtype=torch.long, device=self.ids.device)
        other = copy.copy(self)
        other.ids, other.mask, other.pos = self.ids[index], self.mask[index], self.pos[index]
        if self.cache is not None:
            other.cache = copy.deepcopy(self.cache)
            other.cache.batch_select_indices(index)
        other._below = _select_rows(self._below, index, len(self.ids))
        return other

    def _run(self, hooks: Sequence[tuple]):
        s = self.split
        # The forward appends the suffix to the cache it is given: hand it a copy.
        cache = copy.deepcopy(self.cache) if self.cache is not None else None
        with hooked(self.model, hooks):
            return self.model.hf_model.base_model(
                input_ids=self.ids[:, s:], attention_mask=self.mask, position_ids=self.pos[:, s:],
                use_cache=cache is not None, **{self._cache_kwarg: cache},
            )

    def _output_of_block(self, index: int):
        """What block ``index`` returns on the suffix (extra hooks active), as it returns it."""
        got: dict[str, object] = {}

        def keep(module, args, output):
            got["out"] = output
            raise StopForward

        handle = self._layers[index].register_forward_hook(keep)
        try:
            with torch.no_grad():
                self._run(self.extra_hooks)
        except StopForward:
            pass
        finally:
            handle.remove()
        return got["out"]

    def hidden(self, hooks: Sequence[tuple] = ()) -> Tensor:
        """Final hidden states of the suffix columns, with ``hooks`` (and the extra hooks) active."""
        skipped = list(self._layers[: self.start_block]) if self.start_block else []
        below = self._below
        try:
            for block in skipped:
                # An instance attribute shadows the class's forward for this call only;
                # block start-1's output reaches block start, the others' is ignored.
                # Written into __dict__ directly: the bridge's __setattr__ would pass
                # it on to the wrapped HF layer.
                vars(block)["forward"] = lambda *args, **kwargs: below
            return self._run(self.extra_hooks + list(hooks)).last_hidden_state
        finally:
            for block in skipped:
                vars(block).pop("forward", None)


def _select_rows(value, index: Tensor, n_rows: int):
    """``value`` (a tensor, or tuples/lists of them, as a block returns) with only rows ``index``."""
    if isinstance(value, Tensor):
        return value[index] if value.dim() and value.shape[0] == n_rows else value
    if isinstance(value, (tuple, list)):
        return type(value)(_select_rows(v, index, n_rows) for v in value)
    return value


def prepare_search(model: Model, sites: Sequence[str], params: SearchParams) -> None:
    """Make the bfloat16 weight copies :func:`optimize_deltas` at ``sites`` would make on its
    first call (they are kept on the model while the weights are unchanged)."""
    from workbench.runtime.bfloat16 import bf16_copies

    if search_in_bfloat16(model, params):
        bf16_copies(model, LowPrecisionBlocks(model, first_block(sites)).params)
    if params.mixed_unembed and MixedUnembed.supported(model):
        MixedUnembed(model)  # its constructor takes the unembedding's copy


def first_block(names: Sequence[str]) -> int:
    """The lowest block index among TransformerLens hook names (0 if one names no block).

    Example:
        >>> first_block(["blocks.4.mlp.hook_out", "blocks.6.hook_attn_out"])
        4
    """
    found = []
    for name in names:
        m = re.match(r"blocks\.(\d+)\.", name)
        if m is None:
            return 0
        found.append(int(m.group(1)))
    return min(found) if found else 0


def warn_if_unknown(model: Model, facts: Sequence[Fact]) -> list[Fact]:
    """Warn (``warnings.warn``) about facts whose true object the model does not prefer.

    Returns the facts it warned about. Facts without ``target_true`` are skipped.
    """
    import warnings

    from workbench.probing import probe

    checked = [f for f in facts if f.target_true is not None]
    if not checked:
        return []
    res = probe(model, [f.text for f in checked], targets=[[f.target_true, f.target_new] for f in checked], top_k=1)
    unknown = []
    for f, p in zip(checked, res.prompts):
        # filter_known's criterion (greedy decoding begins the true object), read off the same
        # probe, and the new object must not be preferred already: a made-up subject fails the first.
        if top_begins_true_object(model, f, p.top[0].token) and p.targets[0].logprob > p.targets[1].logprob:
            continue
        unknown.append(f)
        why = (f"it already prefers {f.target_new!r}" if p.targets[0].logprob <= p.targets[1].logprob
               else f"its answer is {p.top[0].token!r}")
        warnings.warn(
            f"the model does not know the fact {f.text!r} -> {f.target_true!r} ({why}); the edit may mean little",
            stacklevel=4,  # warn_if_unknown <- method <- edit <- the caller
        )
    return unknown
