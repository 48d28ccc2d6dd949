"""The v* search: vectors added at chosen hook points at the last subject token, optimised
with Adam until the model says the new object — for one fact or a chunk of facts at once.

Each fact's search is independent of every other's (its rows see only its own δ), so a
chunk runs as one batch: one forward and one backward a step over every fact's rows, the
losses summed, Adam stepping each fact's own δ. A fact that meets ``stop_nll`` is frozen
and its rows leave the batch; the others go on. The δs agree with the one-fact search to
float rounding (``tests/test_targets.py``); a chunk of one runs exactly the one-fact code.

:func:`prefetched` lets a caller hand in searches made ahead in a chunk (independent
evaluation batches its facts' searches, then edits them one by one): an edit whose search
matches one made ahead on the same unedited weights takes it instead of searching again.

Example:
    >>> results = search_deltas(model, facts, ["blocks.4.mlp.hook_out"], prefixes=prefixes)  # doctest: +SKIP
    >>> results[0].nll < 0.05                                                                # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.editing.journal import active as journal_of, search_key
from workbench.editing.optimize import Batch, SuffixRunner, build_batch, first_block
from workbench.editing.search import SearchParams, search_in_bfloat16
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.runtime.lowp import LowPrecisionBlocks
from workbench.runtime.unembed import MixedUnembed

if TYPE_CHECKING:
    from workbench.core.model import Model


@dataclass
class DeltaResult:
    """What the search found for one fact.

    ``deltas[name]`` is the vector added at hook ``name`` at the last subject
    token; ``init[name]`` the unedited activation there (mean over contexts).
    """

    deltas: dict[str, Tensor]
    init: dict[str, Tensor]
    losses: list[float]
    nll: float
    prob: float
    steps: int


class _Rows:
    """Index tensors of the active facts' rows of a :class:`Batch` (rows grouped by fact)."""

    def __init__(self, model: Model, batch: Batch, active: list[int], suffix: bool) -> None:
        dev = model.device
        rows = [r for r in range(len(batch.fact_of)) if batch.fact_of[r] in active]
        self.rows = rows
        self.local_fact = [active.index(batch.fact_of[r]) for r in rows]
        subj = torch.tensor([batch.subject_pos[r] for r in rows], device=dev)
        # Column j of the suffix run is position subject_pos + j of every row (see SuffixRunner).
        offset = subj if suffix else torch.zeros_like(subj)
        self.at = torch.zeros_like(subj) if suffix else subj
        text = [j for j, r in enumerate(rows) if not batch.is_kl[r]]
        kl = [j for j, r in enumerate(rows) if batch.is_kl[r]]
        self.text, self.kl = text, kl
        self.pos_rows = torch.tensor([j for j in text for _ in batch.target_pos[rows[j]]], device=dev)
        self.pos_cols = torch.tensor([p for j in text for p in batch.target_pos[rows[j]]],
                                     device=dev) - offset[self.pos_rows]
        self.tok = torch.tensor([t for j in text for t in batch.target_tok[rows[j]]], device=dev)
        # Each context counts equally within its fact: mean per-token NLL per context.
        per_fact = [sum(self.local_fact[j] == f for j in text) for f in range(len(active))]
        w = torch.tensor([1.0 / len(batch.target_tok[rows[j]]) for j in text for _ in batch.target_tok[rows[j]]],
                         device=dev)
        self.w = w / torch.tensor([per_fact[self.local_fact[j]] for j in text
                                   for _ in batch.target_tok[rows[j]]], device=dev, dtype=w.dtype)
        # Tokens and KL rows are in fact order: each fact's are one slice.
        tok_fact = [self.local_fact[j] for j in text for _ in batch.target_tok[rows[j]]]
        self.tok_slices = [_span(tok_fact, f) for f in range(len(active))]
        self.kl_slices = [_span([self.local_fact[j] for j in kl], f) for f in range(len(active))]
        self.text_of = [[j for j in text if self.local_fact[j] == f] for f in range(len(active))]
        self.kl_r = torch.tensor(kl, device=dev, dtype=torch.long)
        self.kl_c = torch.tensor([batch.target_pos[rows[j]][0] for j in kl], device=dev,
                                 dtype=torch.long) - offset[self.kl_r]
        self.all = torch.arange(len(rows), device=dev)
        self.fact_index = torch.tensor(self.local_fact, device=dev)
        # Rows of the unembedded positions (targets first, then KL rows) per fact, with its targets.
        n_tok = len(tok_fact)
        self.unembed_groups = [
            (torch.tensor(list(range(t.start, t.stop)) + [n_tok + i for i in range(k.start, k.stop)], device=dev,
                          dtype=torch.long), self.tok[t])
            for t, k in zip(self.tok_slices, self.kl_slices)]


def _span(labels: list[int], value: int) -> slice:
    where = [i for i, x in enumerate(labels) if x == value]
    return slice(where[0], where[-1] + 1) if where else slice(0, 0)


class _Search:
    """One search over a chunk of facts (see :func:`search_deltas`)."""

    def __init__(self, model: Model, facts: list[Fact], sites: Sequence[str], *, prefixes: Sequence[str],
                 params: SearchParams, extra_hooks: Sequence[tuple], alone: Sequence[str],
                 reuse_prefix: bool) -> None:
        self.model, self.facts, self.sites = model, facts, list(sites)
        self.params, self.extra_hooks, self.alone = params, list(extra_hooks), list(alone)
        self.batch = build_batch(model, facts, prefixes)
        self.full_runner = (SuffixRunner(model, self.batch, extra_hooks, start_block=first_block(sites))
                            if reuse_prefix else None)
        self.runner = self.full_runner
        self.unembed = MixedUnembed(model) if params.mixed_unembed and MixedUnembed.supported(model) else None
        self.low = (LowPrecisionBlocks(model, self.runner.start_block)
                    if self.runner is not None and search_in_bfloat16(model, params) else None)
        n = len(facts)
        self.deltas: list[dict[str, Tensor]] = [{} for _ in range(n)]
        self.seen: dict[str, Tensor] = {}
        self.init: list[dict[str, Tensor]] = [{} for _ in range(n)]
        self.norms: list[dict[str, float]] = [{} for _ in range(n)]
        self.kl_ref: Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.active = list(range(n))
        self.idx = _Rows(model, self.batch, self.active, self.runner is not None)

    def _shrink(self, keep: list[int]) -> None:
        """Only the facts in ``keep`` stay in the batch (their rows; the runner's cached prefix too)."""
        old = self.idx
        self.active = keep
        self.idx = _Rows(self.model, self.batch, keep, self.full_runner is not None)
        if self.full_runner is not None:
            self.runner = self.full_runner.select(self.idx.rows)
        if self.kl_ref is not None:
            # The reference distributions of the facts that stay, in their new order.
            old_kl = {old.rows[j]: i for i, j in enumerate(old.kl)}
            self.kl_ref = self.kl_ref[[old_kl[self.idx.rows[j]] for j in self.idx.kl]]

    def _adder(self, name: str):
        idx, active = self.idx, self.active

        def hook(acts, hook=None):
            if name not in self.deltas[active[0]]:
                # δ starts at zero (as in ROME), so the first forward is the unedited model:
                # it gives the initial activations and the reference KL without an extra pass.
                self.seen[name] = acts.detach()
                for f in active:
                    self.deltas[f][name] = torch.zeros(acts.shape[-1], device=acts.device, requires_grad=True)
            add = torch.zeros_like(acts)
            if len(active) == 1:
                add[idx.all, idx.at] = self.deltas[active[0]][name].to(acts.dtype)
            else:
                stacked = torch.stack([self.deltas[f][name] for f in active])
                add[idx.all, idx.at] = stacked[idx.fact_index].to(acts.dtype)
            return acts + add
        return hook

    def _forward(self, names: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        """(per-token weighted log-probs of the targets, log-probs at the KL rows) with δs at ``names``."""
        idx, model = self.idx, self.model
        hooks = [(n, self._adder(n)) for n in names]
        if self.runner is not None:
            hidden = self.runner.hidden(hooks).float()
        else:
            rows = torch.tensor(idx.rows, device=model.device)
            with model.bridge.hooks(fwd_hooks=self.extra_hooks + hooks):
                hidden = model.hidden(self.batch.ids[rows], self.batch.mask[rows])
        # One unembedding for the target and the KL positions: with a 262k vocabulary,
        # reading the unembedding matrix is much of the cost of a call, whatever the rows.
        picked = torch.cat([hidden[idx.pos_rows, idx.pos_cols], hidden[idx.kl_r, idx.kl_c]])
        if self.unembed is not None:
            # One fact: its rows share their exact columns, as always. Several: each fact's rows
            # get the exact columns its own search would (its top tokens and targets).
            logp = self.unembed(picked, keep=idx.tok, groups=idx.unembed_groups if len(self.active) > 1 else None)
        else:
            logp = model.logits_from_hidden(picked).float().log_softmax(-1)
        n_tok = len(idx.tok)
        terms = logp[torch.arange(n_tok), idx.tok] * idx.w
        return terms, (logp[n_tok:] if len(idx.kl) else None)

    def _start(self, kl_logp: Tensor | None) -> None:
        """After the first forward: the unedited activations, the KL reference and the optimiser."""
        idx = self.idx
        for f in self.active:
            text = idx.text_of[self.active.index(f)]
            rows = torch.tensor(text, device=self.model.device)
            # The unedited activations at the last subject token, averaged over the fact's non-KL rows.
            self.init[f] = {n: self.seen[n][rows, idx.at[rows]].double().mean(0).cpu() for n in self.sites}
            self.norms[f] = {n: float(v.norm()) for n, v in self.init[f].items()}
        self.kl_ref = kl_logp.detach().float() if kl_logp is not None else None
        self.opt = torch.optim.Adam([self.deltas[f][n] for f in self.active for n in self.sites],
                                    lr=self.params.lr, betas=(self.params.beta1, 0.999))

    def objective(self) -> tuple[list[Tensor], list[Tensor]]:
        """Per active fact (loss, NLL to compare with stop_nll) at the current δs."""
        params, idx = self.params, self.idx
        terms, kl_logp = self._forward(self.sites)
        if self.opt is None:
            self._start(kl_logp)
        nlls = [-terms[s].sum() for s in idx.tok_slices]
        losses = list(nlls)
        if self.alone:
            terms_alone, _ = self._forward([n for n in self.sites if n in self.alone])
            for i, s in enumerate(idx.tok_slices):
                nll_alone = -terms_alone[s].sum()
                losses[i] = losses[i] + nll_alone
                # The worse of "all δs" and "only the kept δs" is what must fall below stop_nll.
                nlls[i] = torch.maximum(nlls[i], nll_alone)
        for i, f in enumerate(self.active):
            s = idx.kl_slices[i]
            if kl_logp is not None and params.kl_weight and s.stop > s.start:
                kl = torch.nn.functional.kl_div(self.kl_ref[s], kl_logp[s], log_target=True, reduction="batchmean")
                losses[i] = losses[i] + params.kl_weight * kl
            for n, d in self.deltas[f].items():
                losses[i] = losses[i] + params.weight_decay * d.pow(2).sum() / max(self.norms[f][n], 1e-8) ** 2
        return losses, nlls

    def run(self) -> list[DeltaResult]:
        params = self.params
        n = len(self.facts)
        losses: list[list[float]] = [[] for _ in range(n)]
        best_nll, best = [math.inf] * n, [dict() for _ in range(n)]
        final_nll: list[float] = [math.inf] * n
        steps = [params.steps] * n
        for step in range(1, params.steps + 1):
            going = self._step(step, losses, best_nll, best, final_nll, steps)
            if not going:
                break
        else:
            self._out_of_steps(best_nll, best, final_nll)
        return [DeltaResult(deltas={k: d.detach().double().cpu() for k, d in self.deltas[f].items()},
                            init=self.init[f], losses=losses[f], nll=final_nll[f], prob=math.exp(-final_nll[f]),
                            steps=steps[f]) for f in range(n)]

    def _step(self, step: int, losses, best_nll, best, final_nll, steps) -> bool:
        """One Adam step of the active facts; False once none is left."""
        params = self.params
        with torch.enable_grad():
            precision = self.low or contextlib.nullcontext()
            with precision:
                loss, nll = self.objective()
            if self.low is not None and any(float(x.detach()) < params.stop_nll for x in nll):
                # Stop on float32 numbers only: measure this step again without bfloat16
                # (and step from that graph if it is not below the threshold after all).
                precision = contextlib.nullcontext()
                loss, nll = self.objective()
            stopped, going = [], []
            for i, f in enumerate(self.active):
                value = float(nll[i].detach())
                final_nll[f] = value
                losses[f].append(float(loss[i].detach()))
                if not math.isfinite(losses[f][-1]):
                    raise WorkbenchError(_nan_message(self.facts[f], step))
                if value < best_nll[f]:
                    best_nll[f], best[f] = value, {k: d.detach().clone() for k, d in self.deltas[f].items()}
                if value < params.stop_nll:
                    stopped.append(f)
                    steps[f] = step
                else:
                    going.append(i)
            if not going:
                return False
            assert self.opt is not None
            self.opt.zero_grad()
            total = loss[going[0]]
            for i in going[1:]:
                total = total + loss[i]
            with precision:
                # Inside the same precision as the forward: autograd holds the weights it used.
                total.backward()
        for f in stopped:
            for d in self.deltas[f].values():
                d.grad = None  # a frozen fact's δ takes no Adam step (Adam skips a None grad)
        self.opt.step()
        with torch.no_grad():
            for i in going:
                f = self.active[i]
                for k, d in self.deltas[f].items():
                    limit = params.clamp * self.norms[f][k]
                    if d.norm() > limit:
                        d.mul_(limit / d.norm())
                    if not torch.isfinite(d).all():
                        raise WorkbenchError(_nan_message(self.facts[f], step))
        if stopped:
            self._shrink([self.active[i] for i in going])
        return True

    def _out_of_steps(self, best_nll, best, final_nll) -> None:
        # Out of steps: the last update was never measured, and Adam can overshoot late
        # (one gemma-3-270m fact went from NLL 0.06 to 2.1 in its last 12 steps), so keep
        # the δs with the lowest NLL measured — re-measured in float32 if bfloat16 found them.
        with torch.no_grad():
            for f in self.active:
                for k, d in self.deltas[f].items():
                    d.copy_(best[f][k])
                final_nll[f] = best_nll[f]
            if self.low is not None:
                _, nll = self.objective()
                for i, f in enumerate(self.active):
                    final_nll[f] = float(nll[i])


def search_deltas(
    model: Model,
    facts: Sequence[Fact],
    sites: Sequence[str],
    *,
    prefixes: Sequence[str] = (),
    params: SearchParams = SearchParams(),
    extra_hooks: Sequence[tuple] = (),
    alone: Sequence[str] = (),
    reuse_prefix: bool = True,
) -> list[DeltaResult]:
    """The v* search for each of ``facts``, all in one batch; one :class:`DeltaResult` per fact.

    Loss per fact (hyperparameters in ``params``, see :class:`SearchParams`) = mean NLL of
    the new object's tokens (all of them) over the bare and prefixed prompts
    + ``kl_weight`` · KL(edited ‖ unedited) of the next token after "{subject} is a"
    + ``weight_decay`` · ‖δ‖²/‖init‖². After each Adam step ‖δ‖ is clamped to
    ``clamp`` · ‖init‖ (init = the unedited activation). A fact stops once its NLL is
    below ``stop_nll``; the others go on without its rows.

    ``alone`` names sites whose δs must also work without the others: their NLL
    with only those δs added is added to the loss (PMET keeps only the FFN δ,
    so the FFN δ by itself has to say the new object; see ``pmet.py``).

    With ``reuse_prefix`` (default) each step recomputes only the positions from
    the last subject token on (see :class:`SuffixRunner`); ``False`` runs every
    position every step — the slow, obvious version the tests compare against.
    With ``params.low_precision`` those steps run the blocks from the first site up
    in bfloat16 where the CPU does it natively (``lowp.py``); a step where a fact meets
    ``stop_nll`` there is measured again in float32 before any fact stops.

    If a fact never meets ``stop_nll``, its δs are those of the step with the lowest
    NLL, and ``nll`` is theirs (in float32).

    Raises:
        WorkbenchError: no facts, or the optimisation produced NaN or inf.
    """
    facts = list(facts)
    if not facts:
        raise WorkbenchError("no facts to search targets for")
    journal = journal_of(model) if not extra_hooks else None
    if journal is None:
        return _Search(model, facts, sites, prefixes=prefixes, params=params, extra_hooks=extra_hooks, alone=alone,
                       reuse_prefix=reuse_prefix).run()
    # A journal (journal.py) answers the searches it holds; the others run as one batch and are added.
    keys = [search_key(model, f, sites, prefixes, params, alone) for f in facts]
    found = [None if (fields := journal.take(k)) is None else DeltaResult(**fields) for k in keys]
    todo = [i for i, r in enumerate(found) if r is None]
    if todo:
        made = _Search(model, [facts[i] for i in todo], sites, prefixes=prefixes, params=params, extra_hooks=(),
                       alone=alone, reuse_prefix=reuse_prefix).run()
        for i, res in zip(todo, made):
            journal.put(keys[i], res)
            found[i] = res
    return found


def optimize_deltas(
    model: Model,
    fact: Fact,
    sites: Sequence[str],
    *,
    prefixes: Sequence[str] = (),
    params: SearchParams = SearchParams(),
    extra_hooks: Sequence[tuple] = (),
    alone: Sequence[str] = (),
    reuse_prefix: bool = True,
) -> DeltaResult:
    """The v* search for one fact (:func:`search_deltas` with a chunk of one), or the result
    a :func:`prefetched` chunk made for exactly this search on the same weights.

    Example:
        >>> res = optimize_deltas(model, fact, ["blocks.4.mlp.hook_out"], prefixes=prefixes)  # doctest: +SKIP
    """
    store = _STORES.get(id(model))
    if store is not None and not extra_hooks and reuse_prefix:
        found = store.take(model, fact, sites, prefixes, params, alone)
        if found is not None:
            return found
    return search_deltas(model, [fact], sites, prefixes=prefixes, params=params, extra_hooks=extra_hooks,
                         alone=alone, reuse_prefix=reuse_prefix)[0]


# -- searches made ahead -------------------------------------------------------------------
@dataclass(frozen=True)
class SearchRequest:
    """A search an edit of one fact would run on the unedited weights (see ``MethodSpec.search``)."""

    fact: Fact
    sites: tuple[str, ...]
    prefixes: tuple[str, ...]
    params: SearchParams
    alone: tuple[str, ...] = ()

    def group(self) -> tuple:
        """Requests with the same group can share one batch."""
        return (self.sites, self.prefixes, self.params, self.alone)


class _Store:
    """Results made ahead, each taken at most once, valid while the weights are unedited."""

    def __init__(self, model: Model) -> None:
        self.version = _weights_version(model)
        self.results: dict[tuple, DeltaResult] = {}
        self.hits = 0

    @staticmethod
    def key(fact: Fact, sites, prefixes, params, alone) -> tuple:
        return (fact.subject, fact.prompt, fact.target_new, tuple(sites), tuple(prefixes), params, tuple(alone))

    def take(self, model: Model, fact: Fact, sites, prefixes, params, alone) -> DeltaResult | None:
        if _weights_version(model) != self.version:
            return None
        found = self.results.pop(self.key(fact, sites, prefixes, params, alone), None)
        self.hits += found is not None
        return found


_STORES: dict[int, _Store] = {}


def _weights_version(model: Model) -> tuple:
    # The searches were made on these weights and with no edit applied; anything else misses.
    return (tuple(id(h) for h in model.edit_stack), len(model.prompt_edits))


@contextlib.contextmanager
def prefetched(model: Model, requests: Sequence[SearchRequest], *, chunk: int = 8) -> Iterator[_Store]:
    """Make ``requests`` ahead, ``chunk`` facts a batch; while inside, an edit whose search
    is one of them (same fact, sites, prefixes and settings, on the same unedited weights)
    takes the result instead of searching.

    Example:
        >>> reqs = [method_spec("rome").search(model, f, None) for f in facts]  # doctest: +SKIP
        >>> with prefetched(model, reqs):                                      # doctest: +SKIP
        ...     for f in facts:
        ...         wb.edit(model, f, method="rome").revert()
    """
    store = _Store(model)
    groups: dict[tuple, list[SearchRequest]] = {}
    for r in requests:
        groups.setdefault(r.group(), []).append(r)
    for reqs in groups.values():
        for start in range(0, len(reqs), chunk):
            part = reqs[start:start + chunk]
            first = part[0]
            found = search_deltas(model, [r.fact for r in part], first.sites, prefixes=first.prefixes,
                                  params=first.params, alone=first.alone)
            for r, res in zip(part, found):
                store.results[store.key(r.fact, r.sites, r.prefixes, r.params, r.alone)] = res
    previous = _STORES.get(id(model))
    _STORES[id(model)] = store
    try:
        yield store
    finally:
        if previous is None:
            _STORES.pop(id(model), None)
        else:
            _STORES[id(model)] = previous


def _nan_message(fact: Fact, step: int) -> str:
    return (f"the target optimisation for {fact.subject!r} produced NaN/inf (step {step}); "
            "the edit was aborted and nothing changed")
