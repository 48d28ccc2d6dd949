"""Ask the model what comes next: top tokens and target-object probabilities.

Target probabilities follow CounterFact's convention: a target's score is the
mean over its tokens of log p(token | prompt, earlier target tokens), and
``prob`` is ``exp`` of that mean (the geometric mean of the per-token
probabilities). A target without a leading space gets one when the prompt does
not end in whitespace, so "Paris" after "...city of" is scored as " Paris".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench import checks
from workbench.errors import WorkbenchError
from workbench.core.model import Model
from workbench.results import Result
from workbench.runtime.unembed import MixedUnembed


@dataclass
class TokenProb(Result):
    token: str
    prob: float


@dataclass
class TargetProb(Result):
    """A target continuation's score. ``token_probs`` holds p of each of its tokens;
    ``rank`` is its first token's place among the prompt's next tokens (1: the top one)."""

    target: str
    prob: float
    logprob: float
    token_probs: list[float] = field(default_factory=list)
    rank: int | None = None


@dataclass
class PromptProbe(Result):
    prompt: str
    top: list[TokenProb]
    targets: list[TargetProb]

    def target(self, text: str) -> TargetProb:
        """The score of one target by its text (as given)."""
        for t in self.targets:
            if t.target == text:
                return t
        raise KeyError(text)


@dataclass
class ProbeResult(Result):
    """What :func:`probe` returns: one :class:`PromptProbe` per prompt."""

    model: str
    prompts: list[PromptProbe]

    def __getitem__(self, i: int) -> PromptProbe:
        return self.prompts[i]

    def __len__(self) -> int:
        return len(self.prompts)

    def to_dict(self) -> dict:
        # token_probs are a detail for notebooks; the JSON contract is prompt/top/targets.
        return {
            "model": self.model,
            "prompts": [
                {
                    "prompt": p.prompt,
                    "top": [{"token": t.token, "prob": t.prob} for t in p.top],
                    "targets": [
                        {"target": t.target, "prob": t.prob, "logprob": t.logprob} for t in p.targets
                    ],
                }
                for p in self.prompts
            ],
        }

    def to_pandas(self):
        import pandas as pd

        rows = []
        for p in self.prompts:
            top = p.top[0] if p.top else None
            base = {"prompt": p.prompt, "top1": top.token if top else None, "top1_prob": top.prob if top else None}
            if not p.targets:
                rows.append(base)
            for t in p.targets:
                rows.append({**base, "target": t.target, "prob": t.prob, "logprob": t.logprob})
        return pd.DataFrame(rows)


def target_ids(model: Model, prompt: str, target: str) -> list[int]:
    """Token ids of ``target`` as a continuation of ``prompt`` (leading space handled)."""
    if not isinstance(target, str) or not target.strip():
        raise WorkbenchError(f"empty target for prompt {prompt!r}")
    if not target[0].isspace() and prompt and not prompt[-1].isspace():
        target = " " + target
    ids = model.encode(target, prompt=False)
    if not ids:
        raise WorkbenchError(f"target {target!r} tokenises to nothing")
    return ids


def _pad_id(model: Model) -> int:
    pad = model.tokenizer.pad_token_id
    return int(pad if pad is not None else (model.tokenizer.eos_token_id or 0))


def _pad_batch(seqs: list[list[int]], pad: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists as one ``[batch, longest]`` tensor and its attention mask.

    Right padding for scoring (causal attention never sees it), left padding for
    generation (every row's next token is then at the last position).
    """
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq)
        mask[row, cols] = 1
    return ids, mask


#: Unembedded rows held at once (each a float32 row of the vocabulary: 1 MiB on Gemma's
#: 262k tokens). Bounds a batch of long texts (perplexity) to a few hundred MiB.
UNEMBED_ROWS = 256


def run_sequences(
    model: Model, sequences: list[list[int]], positions: list[list[int]], *, batch_size: int = 16,
    reduce: Callable[[int, torch.Tensor], Any] | None = None,
) -> list[Any]:
    """Log-softmax next-token distributions at chosen positions of many sequences.

    Sequences are right-padded into batches; with causal attention the padding
    after a sequence cannot change its earlier positions, so results equal
    one-at-a-time runs (to float rounding). Without ``reduce``, returns per
    sequence a tensor ``[len(positions[i]), d_vocab]`` of log-probabilities: a
    vocabulary row per position, so memory grows with the input. With
    ``reduce(i, logp)`` only what it returns is kept for sequence ``i`` (the
    scores a caller needs), and memory stays bounded however many sequences come.

    Example:
        >>> ids = model.tokens("The Eiffel Tower is in")[0].tolist()        # doctest: +SKIP
        >>> run_sequences(model, [ids], [[len(ids) - 1]], reduce=lambda i, lp: int(lp[0].argmax()))  # doctest: +SKIP
        [12345]
    """
    out: list[Any] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    pad = _pad_id(model)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _pad_batch([sequences[i] for i in chunk], pad)
        with torch.no_grad():
            hidden = model.hidden(ids.to(model.device), mask.to(model.device))
            rows = torch.cat([torch.full((len(positions[i]),), r) for r, i in enumerate(chunk)])
            cols = torch.cat([torch.tensor(positions[i]) for i in chunk])
            selected = hidden[rows, cols]
            del hidden
            at = 0
            for group in _row_groups([len(positions[i]) for i in chunk]):
                n_rows = sum(len(positions[chunk[g]]) for g in group)
                logp = model.logits_from_hidden(selected[at : at + n_rows]).float().log_softmax(-1).cpu()
                at += n_rows
                offset = 0
                for g in group:
                    i, n = chunk[g], len(positions[chunk[g]])
                    out[i] = logp[offset : offset + n] if reduce is None else reduce(i, logp[offset : offset + n])
                    offset += n
                del logp
    return out


def _row_groups(counts: list[int], budget: int = UNEMBED_ROWS) -> list[list[int]]:
    """Consecutive indices grouped so that each group's rows stay within ``budget`` (one sequence at least).

    Example:
        >>> _row_groups([100, 100, 100, 300], budget=256)
        [[0, 1], [2], [3]]
    """
    groups: list[list[int]] = []
    total = budget + 1
    for i, n in enumerate(counts):
        if total + n > budget:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def probe(
    model: Model,
    prompts: str | Sequence[str],
    *,
    targets: Sequence[str] | Sequence[Sequence[str]] | None = None,
    top_k: int = 5,
    batch_size: int = 16,
) -> ProbeResult:
    """Top-k next tokens of each prompt and the probability of each target.

    Args:
        model: a loaded :class:`~workbench.core.model.Model`.
        prompts: one prompt or several.
        targets: target continuations scored after every prompt, or one list per prompt.
        top_k: how many next tokens to list.
        batch_size: prompts per forward pass.

    Example:
        >>> r = probe(model, "The Eiffel Tower is located in the city of", targets=["Paris", "Rome"])
        >>> r[0].top[0].token, r[0].target("Paris").prob > r[0].target("Rome").prob
        (' Paris', True)
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise WorkbenchError("no prompts to probe")
    top_k = checks.top_k(top_k, low=0)
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise WorkbenchError("empty prompt")
    if targets is None:
        per_prompt: list[list[str]] = [[] for _ in prompts]
    elif all(isinstance(t, str) for t in targets):
        per_prompt = [list(targets) for _ in prompts]  # type: ignore[arg-type]
    else:
        if len(targets) != len(prompts):
            raise WorkbenchError("give one list of targets per prompt, or one list for all")
        per_prompt = [list(t) for t in targets]  # type: ignore[arg-type]

    sequences, positions, plan = [], [], []
    for pi, prompt in enumerate(prompts):
        prompt_ids = model.tokens(model.contextualize(prompt))[0].tolist()
        # One sequence per (prompt, target); the prompt's own next-token
        # distribution comes from the first of them (or a bare prompt).
        tids_list = [target_ids(model, prompt, t) for t in per_prompt[pi]]
        if not tids_list:
            sequences.append(prompt_ids)
            positions.append([len(prompt_ids) - 1])
            plan.append((pi, None, None))
        for ti, tids in enumerate(tids_list):
            sequences.append(prompt_ids + tids[:-1])
            positions.append(list(range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(tids))))
            plan.append((pi, ti, tids))
    first = {}
    for i, (pi, _, _) in enumerate(plan):
        first.setdefault(pi, i)

    def keep(i: int, logp: torch.Tensor) -> tuple:
        # Only what the result shows: the top tokens (once per prompt), the target's token log-probs, its rank.
        pi, _, tids = plan[i]
        top = logp[0].exp().topk(top_k) if top_k > 0 and first[pi] == i else None
        if tids is None:
            return top, None, None
        return top, logp[torch.arange(len(tids)), torch.tensor(tids)], int((logp[0] > logp[0, tids[0]]).sum()) + 1

    kept = run_sequences(model, sequences, positions, batch_size=batch_size, reduce=keep)

    results = [PromptProbe(prompt=p, top=[], targets=[None] * len(per_prompt[i])) for i, p in enumerate(prompts)]  # type: ignore[list-item]
    for (pi, ti, tids), (top, token_logps, rank) in zip(plan, kept):
        res = results[pi]
        if top is not None:
            res.top = [TokenProb(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]
        if ti is not None:
            mean = float(token_logps.mean())
            res.targets[ti] = TargetProb(
                target=per_prompt[pi][ti], prob=float(torch.tensor(mean).exp()), logprob=mean,
                token_probs=[float(x) for x in token_logps.exp()], rank=rank,
            )
    return ProbeResult(model=model.name, prompts=results)


def generate(
    model: Model,
    prompt: str,
    *,
    max_new_tokens: int = 30,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    fast: bool = True,
) -> str:
    """Continue ``prompt``; greedy by default. Returns the continuation only, up to
    the first end, special or control token (:func:`_stop_ids`).

    Top-k sampling (``do_sample=True, top_k=k``) runs its own loop by default
    (``fast``): the candidates come from a bfloat16 unembedding and their logits
    are recomputed in float32 (:meth:`~workbench.runtime.unembed.MixedUnembed.top_logits`),
    then one ``torch.multinomial`` draw per token over the whole vocabulary, as
    Hugging Face's ``generate`` does, so the same seed gives the same text
    (bar a last-bit difference landing on a sampling boundary). Reading the 262k x 640
    unembedding is most of a token's cost on a CPU; in bfloat16 it is half the bytes.
    ``fast=False`` calls ``generate`` of Hugging Face.

    Example:
        >>> generate(model, "The Eiffel Tower is located in", max_new_tokens=5)
        ' the city of Paris,'
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError("empty prompt")
    ids = model.tokens(model.contextualize(prompt))
    if do_sample and top_k is not None and fast:
        if MixedUnembed.supported(model):
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                new = _sample_top_k(model, MixedUnembed(model), ids, max_new_tokens=max_new_tokens, top_k=top_k,
                                    temperature=temperature)
            return _decode_until_stop(model, new)
    kwargs = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, "pad_token_id": _pad_id(model)}
    if do_sample:
        kwargs.update(temperature=temperature, top_k=top_k)
    else:
        # Silence sampling settings inherited from the checkpoint's generation config.
        kwargs.update(temperature=None, top_p=None, top_k=None)
    stops = _stop_ids(model)
    # Stop at the first end, special or control token: Gemma 3 270M otherwise fills the
    # rest with "<start_of_image>" runs, which read as a broken model.
    kwargs["eos_token_id"] = sorted(stops)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        out = model.hf_model.generate(ids, attention_mask=torch.ones_like(ids), use_cache=True, **kwargs)
    return _decode_until_stop(model, out[0, ids.shape[1]:].tolist())


def _decode_until_stop(model: Model, ids: list[int]) -> str:
    """The text of ``ids`` up to (not including) the first stop token (:func:`_stop_ids`)."""
    stops = _stop_ids(model)
    cut = next((k for k, t in enumerate(ids) if t in stops), len(ids))
    return model.tokenizer.decode(ids[:cut], skip_special_tokens=True)


def _sample_top_k(
    model: Model, unembed, ids: torch.Tensor, *, max_new_tokens: int, top_k: int, temperature: float
) -> list[int]:
    """Top-k sampling with a KV cache; draws from the global RNG like Hugging Face's sampler."""
    base = model.hf_model.base_model
    cache_kwarg = model.cache_kwarg
    stops = _stop_ids(model)
    vocab = unembed.weight.shape[0]
    cache, x, new = None, ids, []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = base(input_ids=x, use_cache=True, **{cache_kwarg: cache})
            cache = out.past_key_values
            values, tokens = unembed.top_logits(out.last_hidden_state[:, -1], top_k)
            if temperature != 1.0:
                values = values / temperature
            # The whole vocabulary, zeros outside the top k: the same draw as HF's top-k sampler.
            token = int(_draw(values, tokens, vocab)[0])
            new.append(token)
            if token in stops:
                break
            x = torch.tensor([[token]], device=ids.device)
    return new


def _draw(values: torch.Tensor, tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """One token per row from ``softmax(values)`` over ``tokens``: the token ``torch.multinomial``
    draws from the whole-vocabulary distribution (zeros outside ``tokens``) with the same random
    state, which it leaves where ``torch.multinomial`` leaves it.

    PyTorch draws one sample as ``argmax(p / q)`` with ``q ~ Exp(1)`` for every column. All of the
    ``q`` are drawn, to keep the random stream, but only the top k's are divided and compared:
    on a CPU that is a third less of a step's draw (``tests/test_generate.py`` compares the two).
    """
    if values.device.type != "cpu":
        probs = torch.zeros(values.shape[0], vocab, device=values.device)
        probs.scatter_(1, tokens, values.softmax(-1))
        return torch.multinomial(probs, num_samples=1)[:, 0]
    q = torch.empty(values.shape[0], vocab).exponential_()
    pick = (values.softmax(-1) / q.gather(1, tokens)).argmax(-1, keepdim=True)
    return tokens.gather(1, pick)[:, 0]


def _sample_top_k_many(
    model: Model, unembed: MixedUnembed, ids: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int,
    top_k: int | None, pad: int, stopping_criteria=None,
) -> torch.Tensor:
    """Top-k sampling (temperature 1) of a left-padded batch with a KV cache: the new tokens, ``[rows, steps]``.

    ``top_k=None``: greedy decoding instead, each row's largest float32 logit (what Hugging
    Face's greedy ``generate`` picks, found without the full float32 product).

    Mirrors Hugging Face's ``generate(do_sample=True, top_k=...)`` so that a seed gives the
    same texts: positions counted from each row's first real token, one
    ``torch.multinomial`` over the whole vocabulary per step for every row (zeros outside
    the top k), a row that has met the end-of-sequence token padded from then on, and
    the batch ended when every row has, or when ``stopping_criteria`` says so. What it
    saves is the unembedding: each row's top k come from bfloat16 candidates with
    float32 logits (:meth:`~workbench.runtime.unembed.MixedUnembed.top_logits`), half the
    bytes of the 262k x 640 float32 product that is about half of a step on a CPU.
    """
    base = model.hf_model.base_model
    eos = model.hf_model.generation_config.eos_token_id
    eos = torch.tensor(eos if isinstance(eos, list) else [] if eos is None else [eos], device=ids.device)
    vocab = unembed.weight.shape[0]
    rows = ids.shape[0]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    unfinished = torch.ones(rows, dtype=torch.bool, device=ids.device)
    seq, cache, x = ids, None, ids
    for _ in range(max_new_tokens):
        out = base(input_ids=x, attention_mask=mask, position_ids=positions, use_cache=True,
                   **{model.cache_kwarg: cache})
        cache = out.past_key_values
        values, tokens = unembed.top_logits(out.last_hidden_state[:, -1], top_k or 1)
        if top_k is None:
            token = tokens[:, 0]
        else:
            token = _draw(values, tokens, vocab)
        token = torch.where(unfinished, token, torch.full_like(token, pad))
        seq = torch.cat([seq, token[:, None]], dim=1)
        unfinished &= ~torch.isin(token, eos)
        if stopping_criteria is not None:
            unfinished &= ~stopping_criteria[0](seq, None)
        if not unfinished.any():
            break
        x = token[:, None]
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
        positions = positions[:, -1:] + 1
    return seq[:, ids.shape[1]:]


def generate_many(
    model: Model,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 12,
    do_sample: bool = False,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    cancel=None,
    on_text: Callable[[list[str]], None] | None = None,
    fast: bool = True,
) -> list[str]:
    """Continue many prompts at once (left-padded batches); greedy by default.

    ``cancel``: a :class:`~workbench.runtime.progress.CancelToken` checked after every new token;
    when it is set the call raises :class:`~workbench.runtime.progress.Cancelled` within one step
    (the app's greedy answers give way to a click this way).
    ``on_text``: called after every new token with each prompt's text so far (in the
    order of ``prompts``; "" for a prompt not begun), so that a caller can show the
    text as it grows. Greedy generation ends once every prompt of a batch has met a
    stop token (what follows one is never shown), not only at ``max_new_tokens``.

    Greedy continuations equal one :func:`generate` call per prompt (the padding
    is masked and positions start at each prompt's first real token; a test checks
    it), cut before the first end, special or control token (:func:`_stop_ids`).
    Sampled ones (``do_sample=True``) are reproducible for the same prompts,
    seed and ``batch_size``, but a prompt's text depends on its batch (one random
    stream serves the batch). Prompts pass through ``model.contextualize``.
    Top-k sampling runs :func:`generate`'s own loop (``fast``; bfloat16 candidates,
    float32 logits, Hugging Face's draw), batched: the same texts as ``fast=False``
    bar a last-bit difference landing on a sampling boundary (a test compares them).
    Greedy decoding runs that loop too (``fast``, a checkpoint with no logits processing),
    taking each row's largest float32 logit; on a CPU without bfloat16 both find the top
    tokens through the int8 screen of :mod:`~workbench.runtime.screen`.

    Example:
        >>> generate_many(model, ["The Eiffel Tower is in", "Rome is the capital of"], max_new_tokens=3)
        [' Paris, France', ' Italy.\\n']          # doctest: +SKIP
    """
    prompts = list(prompts)
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise WorkbenchError("empty prompt")
    max_new_tokens = checks.whole("max_new_tokens", max_new_tokens, low=1, high=1000)
    encoded = [model.tokens(model.contextualize(p))[0].tolist() for p in prompts]
    pad = _pad_id(model)
    kwargs: dict = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, "pad_token_id": pad}
    if do_sample:
        kwargs.update(top_k=top_k, temperature=1.0, top_p=None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    out: list[str] = [""] * len(prompts)
    # Similar lengths together: less padding, and the order does not depend on the caller's.
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    # Greedy decoding takes the own loop too where the checkpoint asks for no logits processing.
    own_loop = fast and MixedUnembed.supported(model) and (
        (do_sample and top_k is not None) or (not do_sample and _plain_greedy(model)))
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = _pad_batch([encoded[i] for i in chunk], pad, left=True)
            width = ids.shape[1]
            criteria = _criteria(model, cancel, width, chunk, out, on_text, stop_rows=not do_sample)
            if own_loop:
                new = _sample_top_k_many(model, MixedUnembed(model), ids.to(model.device), mask.to(model.device),
                                         max_new_tokens=max_new_tokens, top_k=top_k if do_sample else None,
                                         pad=pad, **criteria)
            else:
                new = model.hf_model.generate(ids.to(model.device), attention_mask=mask.to(model.device),
                                              use_cache=True, **kwargs, **criteria)[:, width:]
            if cancel is not None:
                cancel.check()
            for row, i in enumerate(chunk):
                out[i] = _decode_until_stop(model, new[row].tolist())
    return out


def _plain_greedy(model: Model) -> bool:
    """Whether greedy ``generate`` on this checkpoint is a plain argmax (no penalty, ban or forced token
    in its generation config), so that the own loop picks what it picks."""
    gc = model.hf_model.generation_config
    neutral = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
               "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": 0}
    banned = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
              "forced_eos_token_id", "sequence_bias", "logits_processor")
    return (all(getattr(gc, k, None) in (None, v) for k, v in neutral.items())
            and not any(getattr(gc, k, None) for k in banned))


def _criteria(model: Model, cancel, width: int, chunk: list[int], out: list[str], on_text, *,
              stop_rows: bool) -> dict:
    """``stopping_criteria`` for Hugging Face's ``generate``, called after every new token:
    end at once when ``cancel`` is set; with ``stop_rows``, end a row at its first stop
    token (its text is cut there anyway, and the batch ends when every row has); report
    the texts so far to ``on_text`` (``out`` holds the finished batches' texts)."""
    if cancel is None and not stop_rows and on_text is None:
        return {}
    from transformers import StoppingCriteria, StoppingCriteriaList

    stops = torch.tensor(sorted(_stop_ids(model)))

    class _Criteria(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            if stop_rows:
                done |= torch.isin(input_ids[:, width:], stops.to(input_ids.device)).any(dim=1)
            if on_text is not None:
                texts = list(out)
                for row, i in enumerate(chunk):
                    texts[i] = _decode_until_stop(model, input_ids[row, width:].tolist())
                on_text(texts)
            if cancel is not None and cancel.cancelled:
                done[:] = True
            return done

    return {"stopping_criteria": StoppingCriteriaList([_Criteria()])}


def _stop_ids(model: Model) -> frozenset[int]:
    """Token ids that end a generated text: end of sequence, special and control tokens.

    Gemma 3's ``<start_of_image>`` is neither "special" to the tokenizer nor an end
    token, yet the text-only 270M model emits it in runs after an answer; every
    added token spelt ``<...>`` counts as a stop.
    """

    def build() -> frozenset[int]:
        tok = model.tokenizer
        eos = model.hf_model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        ids.update(tok.all_special_ids)
        ids.update(k for k, v in tok.added_tokens_decoder.items()
                   if v.content.startswith("<") and v.content.endswith(">") and " " not in v.content)
        ids.discard(tok.bos_token_id)
        return frozenset(i for i in ids if i is not None)

    # From the tokenizer and generation config only: no edit changes them.
    return model.memo.get(("stop_ids",), build)
