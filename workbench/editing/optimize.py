"""Shared machinery of the locate-then-edit methods (ROME, MEMIT, PMET, FT).

* :func:`context_prefixes` — short generated texts put in front of the edit
  prompt, so that keys and targets do not depend on one exact wording.
* :func:`build_batch` — the prefixed prompts of facts as token ids, with the
  position of the last subject token and of every target token.
* :func:`capture` — activations at the last subject token (averaged over the
  prefixes), optionally with virtual weight updates applied through hooks.
* :func:`optimize_deltas` — the v* search: vectors added to chosen hook points
  at the last subject token, optimised with Adam so the model says the new object.

Everything here reads the model through hooks and never writes a weight;
``commit_weights`` does that, once.

Example:
    >>> prefixes = context_prefixes(model, n=5)                         # doctest: +SKIP
    >>> res = optimize_deltas(model, fact, {"blocks.4.mlp.hook_out": 640}, prefixes=prefixes)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.cache import cache_dir, write_file_atomically
from workbench.lowp import LowPrecisionBlocks
from workbench.lowp import usable as lowp_usable
from workbench.editing.search import SearchParams
from workbench.errors import WorkbenchError
from workbench.facts import Fact, top_begins_true_object
from workbench.model import StopForward
from workbench.probing import target_ids
from workbench.unembed import MixedUnembed

_STARTERS = ("The", "Therefore", "Because", "I", "You", "It", "In", "However", "When", "She")


def param_name(model, param: torch.nn.Parameter) -> str:
    """The Hugging Face name of a parameter (as ``commit_weights`` wants it), by identity."""
    for name, p in model.hf_model.named_parameters(remove_duplicate=False):
        if p is param:
            return name
    raise WorkbenchError("parameter not found in the model (was the bridge rebuilt?)")


def value_param(model, layer: int) -> tuple[str, torch.nn.Parameter]:
    """Name and parameter of the FFN output matrix of ``layer``."""
    p = model.roles.value_weight(model.bridge, layer)
    return param_name(model, p), p


def to_stored(model, dW: Float[Tensor, "d_model d_mlp"]) -> Tensor:
    """An update written as ``[d_model, d_mlp]`` (out x in) in the parameter's own layout."""
    return dW.T if model.roles.value_weight_rows_are_values else dW


def as_matrix(model, weight: Tensor) -> Float[Tensor, "d_model d_mlp"]:
    """The stored FFN output parameter as an ``[d_model, d_mlp]`` matrix (v = W k)."""
    return weight.T if model.roles.value_weight_rows_are_values else weight


# -- context prefixes --------------------------------------------------------------------
def context_prefixes(model, n: int = 10, *, min_tokens: int = 5, max_tokens: int = 10, seed: int = 0) -> list[str]:
    """``n`` short texts sampled from the model, each ending in ``". "``; cached per model.

    ROME averages keys and optimises targets over the edit prompt preceded by
    such prefixes, so the edit holds for the subject in other contexts too.

    Example:
        >>> context_prefixes(model, n=2)                       # doctest: +SKIP
        ['The first time I saw the movie. ', 'Therefore, the court ruled. ']
    """
    from workbench.probing import generate

    if n <= 0:
        return []
    path = cache_dir("prefixes") / f"{model.fingerprint}_{n}_{min_tokens}-{max_tokens}_s{seed}.json"
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list) and len(data) == n and all(isinstance(x, str) for x in data):
                return data
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # a corrupt cache entry is generated again (and overwritten below)
    out = []
    for i in range(n):
        start = _STARTERS[i % len(_STARTERS)]
        length = min_tokens + i % (max_tokens - min_tokens + 1)
        text = start + generate(model, start, max_new_tokens=length, do_sample=True, top_k=5, seed=seed + i)
        # Braces would break str.format-style templates; newlines look odd in a prompt.
        text = " ".join(text.replace("{", "(").replace("}", ")").split())
        out.append(text.rstrip(".") + ". ")
    write_file_atomically(path, json.dumps(out).encode())
    return out


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


def subject_end(model, text: str, end_char: int) -> int:
    """Index of the token that holds character ``end_char - 1`` of ``text`` (with BOS)."""
    return len(model.encode(text[:end_char])) - 1


def build_batch(
    model, facts: Sequence[Fact], prefixes: Sequence[str], *, target: str = "new", kl_prompt: str | None = "{} is a",
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
def virtual_update_hooks(model, updates: dict[int, Tensor]) -> list[tuple]:
    """Hooks that make the model behave as if ``W_l += updates[l]`` (``[d_model, d_mlp]``).

    Reading the key at ``ffn_keys`` and adding ``ΔW k`` at ``ffn_out`` is exactly
    a weight change, without touching the weights (so nothing can be left half-edited).
    """
    hooks = []
    for layer, dW in updates.items():
        store: dict[str, Tensor] = {}

        def keep(acts, hook=None, store=store):
            store["k"] = acts

        def add(out, hook=None, store=store, dW=dW):
            return out + (store["k"].to(dW.dtype) @ dW.T).to(out.dtype)

        hooks.append((model.roles.hook("ffn_keys", layer), keep))
        hooks.append((model.roles.hook("ffn_out", layer), add))
    return hooks


def capture(
    model, batch: Batch, names: Sequence[str], *, extra_hooks: Sequence[tuple] = (), n_facts: int | None = None,
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
        got: dict[str, Tensor] = {}

        def grabber(name: str):
            # Keyed by the name we asked for: an aliased hook reports its canonical name.
            def grab(acts, hook=None):
                got[name] = acts
                if len(got) == len(names):
                    # Everything asked for is in hand; the layers above cannot change it.
                    raise StopForward
            return grab

        hooks = list(extra_hooks) + [(n, grabber(n)) for n in names]
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            model.run_for_hooks(batch.ids[rows], batch.mask[rows])
        idx = torch.tensor([batch.fact_of[r] for r in rows])
        pos = torch.tensor([batch.subject_pos[r] for r in rows])
        for n in names:
            vals = got[n][torch.arange(len(rows)), pos.to(got[n].device)].double().cpu()
            if n not in sums:
                sums[n] = torch.zeros(n_facts, vals.shape[-1], dtype=torch.float64)
            sums[n].index_add_(0, idx, vals)
        counts.index_add_(0, idx, torch.ones(len(rows), dtype=torch.float64))
    return {n: s / counts[:, None].clamp(min=1) for n, s in sums.items()}


# -- the v* search -----------------------------------------------------------------------
@dataclass
class DeltaResult:
    """What :func:`optimize_deltas` found for one fact.

    ``deltas[name]`` is the vector added at hook ``name`` at the last subject
    token; ``init[name]`` the unedited activation there (mean over contexts).
    """

    deltas: dict[str, Tensor]
    init: dict[str, Tensor]
    losses: list[float]
    nll: float
    prob: float
    steps: int


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

    def __init__(self, model, batch: Batch, extra_hooks: Sequence[tuple] = (), *, start_block: int = 0) -> None:
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
            with torch.no_grad(), model.bridge.hooks(fwd_hooks=self.extra_hooks):
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

    def _run(self, hooks: Sequence[tuple]):
        s = self.split
        # The forward appends the suffix to the cache it is given: hand it a copy.
        cache = copy.deepcopy(self.cache) if self.cache is not None else None
        with self.model.bridge.hooks(fwd_hooks=list(hooks)):
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


def prepare_search(model, sites: Sequence[str], params: SearchParams) -> None:
    """Make the bfloat16 weight copies :func:`optimize_deltas` at ``sites`` would make on its
    first call (they are kept on the model while the weights are unchanged)."""
    from workbench.bfloat16 import bf16_copies

    if params.low_precision and lowp_usable(model):
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


def optimize_deltas(
    model,
    fact: Fact,
    sites: Sequence[str],
    *,
    prefixes: Sequence[str] = (),
    params: SearchParams = SearchParams(),
    extra_hooks: Sequence[tuple] = (),
    alone: Sequence[str] = (),
    reuse_prefix: bool = True,
) -> DeltaResult:
    """Find vectors that, added at ``sites`` at the last subject token, make the model say the new object.

    Loss (hyperparameters in ``params``, see :class:`SearchParams`) = mean NLL of
    the new object's tokens (all of them) over the bare and prefixed prompts
    + ``kl_weight`` · KL(edited ‖ unedited) of the next token after "{subject} is a"
    + ``weight_decay`` · ‖δ‖²/‖init‖². After each Adam
    step ‖δ‖ is clamped to ``clamp`` · ‖init‖ (init = the unedited activation).
    Stops early once the NLL is below ``stop_nll``.

    ``alone`` names sites whose δs must also work without the others: their NLL
    with only those δs added is added to the loss (PMET keeps only the FFN δ,
    so the FFN δ by itself has to say the new object; see ``pmet.py``).

    With ``reuse_prefix`` (default) each step recomputes only the positions from
    the last subject token on (see :class:`SuffixRunner`); ``False`` runs every
    position every step — the slow, obvious version the tests compare against.
    With ``params.low_precision`` those steps run the blocks from the first site up
    in bfloat16 where the CPU does it natively (``lowp.py``); a step that meets
    ``stop_nll`` there is measured again in float32 before the search stops.

    If ``stop_nll`` is never met, the δs returned are those of the step with the
    lowest NLL, and ``nll`` is theirs (in float32).

    Raises:
        WorkbenchError: the optimisation produced NaN or inf.
    """
    batch = build_batch(model, [fact], prefixes)
    rows_t = batch.rows(kl=False)
    kl_rows = batch.rows(kl=True)
    n_rows = len(batch.fact_of)
    # Column j of the suffix run is position subject_pos + j of every row (see SuffixRunner).
    runner = SuffixRunner(model, batch, extra_hooks, start_block=first_block(sites)) if reuse_prefix else None
    subj = torch.tensor(batch.subject_pos, device=model.device)
    offset = subj if runner is not None else torch.zeros_like(subj)
    at = torch.zeros_like(subj) if runner is not None else subj

    # Positions whose log-probs we need: every target token, and the KL prompt's last token.
    pos_rows = torch.tensor([r for r in rows_t for _ in batch.target_pos[r]], device=model.device)
    pos_cols = torch.tensor([p for r in rows_t for p in batch.target_pos[r]], device=model.device) - offset[pos_rows]
    tok = torch.tensor([t for r in rows_t for t in batch.target_tok[r]], device=model.device)
    # Weight each row's tokens so that every context counts equally (mean per-token NLL per context).
    w = torch.tensor([1.0 / len(batch.target_tok[r]) for r in rows_t for _ in batch.target_tok[r]], device=model.device)
    w = w / len(rows_t)
    kl_r = torch.tensor(kl_rows, device=model.device, dtype=torch.long)
    kl_c = torch.tensor([batch.target_pos[r][0] for r in kl_rows], device=model.device, dtype=torch.long) - offset[kl_r]
    all_rows = torch.arange(n_rows, device=model.device)

    n_tok = len(tok)
    rows_idx = torch.tensor(rows_t, device=model.device)
    deltas: dict[str, Tensor] = {}
    seen: dict[str, Tensor] = {}
    unembed = MixedUnembed(model) if params.mixed_unembed and MixedUnembed.supported(model) else None

    def adder(name: str):
        def hook(acts, hook=None):
            if name not in deltas:
                # δ starts at zero (as in ROME), so the first forward is the unedited model:
                # it gives the initial activations and the reference KL without an extra pass.
                seen[name] = acts.detach()
                deltas[name] = torch.zeros(acts.shape[-1], device=acts.device, requires_grad=True)
            add = torch.zeros_like(acts)
            add[all_rows, at] = deltas[name].to(acts.dtype)
            return acts + add
        return hook

    def forward(names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        hooks = [(n, adder(n)) for n in names]
        if runner is not None:
            hidden = runner.hidden(hooks).float()
        else:
            with model.bridge.hooks(fwd_hooks=list(extra_hooks) + hooks):
                hidden = model.hidden(batch.ids, batch.mask)
        # One unembedding for the target and the KL positions: with a 262k vocabulary,
        # reading the unembedding matrix is much of the cost of a call, whatever the rows.
        picked = torch.cat([hidden[pos_rows, pos_cols], hidden[kl_r, kl_c]])
        if unembed is not None:
            logp = unembed(picked, keep=tok)
        else:
            logp = model.logits_from_hidden(picked).float().log_softmax(-1)
        nll = -(logp[torch.arange(n_tok), tok] * w).sum()
        return nll, (logp[n_tok:] if len(kl_rows) else None)

    opt: torch.optim.Optimizer | None = None
    init: dict[str, Tensor] = {}
    norms: dict[str, float] = {}
    kl_ref: Tensor | None = None

    def objective() -> tuple[Tensor, Tensor]:
        """(loss, NLL to compare with stop_nll) at the current δs; the first call sets init and the KL reference."""
        nonlocal opt, init, norms, kl_ref
        nll, kl_logp = forward(sites)
        if opt is None:
            # The unedited activations at the last subject token, averaged over the non-KL rows.
            init = {n: seen[n][rows_idx, at[rows_idx]].double().mean(0).cpu() for n in sites}
            norms = {n: float(v.norm()) for n, v in init.items()}
            kl_ref = kl_logp.detach().float() if kl_logp is not None else None
            opt = torch.optim.Adam([deltas[n] for n in sites], lr=params.lr, betas=(params.beta1, 0.999))
        loss = nll
        if alone:
            nll_alone, _ = forward([n for n in sites if n in alone])
            loss = loss + nll_alone
            # The worse of "all δs" and "only the kept δs" is what must fall below stop_nll.
            nll = torch.maximum(nll, nll_alone)
        if kl_logp is not None and params.kl_weight:
            kl = torch.nn.functional.kl_div(kl_ref, kl_logp, log_target=True, reduction="batchmean")
            loss = loss + params.kl_weight * kl
        for n, d in deltas.items():
            loss = loss + params.weight_decay * d.pow(2).sum() / max(norms[n], 1e-8) ** 2
        return loss, nll

    low = (
        LowPrecisionBlocks(model, runner.start_block)
        if params.low_precision and runner is not None and lowp_usable(model) else None
    )
    losses: list[float] = []
    nll_value = math.inf
    best_nll, best = math.inf, {}
    step = 0
    for step in range(1, params.steps + 1):
        with torch.enable_grad():
            precision = low or contextlib.nullcontext()
            with precision:
                loss, nll = objective()
            if low is not None and float(nll.detach()) < params.stop_nll:
                # Stop on float32 numbers only: measure this step again without bfloat16
                # (and step from that graph if it is not below the threshold after all).
                precision = contextlib.nullcontext()
                loss, nll = objective()
            nll_value = float(nll.detach())
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise WorkbenchError(_nan_message(fact, step))
            if nll_value < best_nll:
                best_nll, best = nll_value, {n: d.detach().clone() for n, d in deltas.items()}
            if nll_value < params.stop_nll:
                break
            assert opt is not None
            opt.zero_grad()
            with precision:
                # Inside the same precision as the forward: autograd holds the weights it used.
                loss.backward()
        opt.step()
        with torch.no_grad():
            for n, d in deltas.items():
                limit = params.clamp * norms[n]
                if d.norm() > limit:
                    d.mul_(limit / d.norm())
                if not torch.isfinite(d).all():
                    raise WorkbenchError(_nan_message(fact, step))
    else:
        # Out of steps: the last update was never measured, and Adam can overshoot late
        # (one gemma-3-270m fact went from NLL 0.06 to 2.1 in its last 12 steps), so return
        # the δs with the lowest NLL measured — re-measured in float32 if bfloat16 found them.
        with torch.no_grad():
            for n, d in deltas.items():
                d.copy_(best[n])
            nll_value = best_nll if low is None else float(objective()[1])
    out = {n: d.detach().double().cpu() for n, d in deltas.items()}
    return DeltaResult(deltas=out, init=init, losses=losses, nll=nll_value, prob=math.exp(-nll_value), steps=step)


def _nan_message(fact: Fact, step: int) -> str:
    return (f"the target optimisation for {fact.subject!r} produced NaN/inf (step {step}); "
            "the edit was aborted and nothing changed")


def warn_if_unknown(model, facts: Sequence[Fact]) -> list[Fact]:
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
