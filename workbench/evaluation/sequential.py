"""Sequential and batch modes: the edits stay applied together.

- :func:`run_sequential` keeps every edit (``batch_size`` facts per call). Whenever the
  facts edited so far pass a multiple of ``every`` it scores them (a fixed, seeded sample
  of ``score_sample`` of them once there are more), the perplexity and the fluency: the
  degradation curve of Gupta et al. (2024). The last point scores every fact; the
  per-fact "after" scores are those at the end.
- :func:`run_batch` makes one edit call with all facts (MEMIT, PMET; others stack them).

Both score the facts' unedited state first and measure fluency on a fixed set of
generation prompts spread over the dataset. ``evaluate`` reverts the edits afterwards.

Example:
    >>> outcome = run_sequential(run)                                  # doctest: +SKIP
    >>> [p.n_edits for p in outcome.curve]                             # doctest: +SKIP
    [0, 10, 20]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.evaluation import checkpoint, generated
from workbench.evaluation.fluency import generation_prompts
from workbench.evaluation.report import CurvePoint, FactRow, curve_rates
from workbench.evaluation.run import Outcome, Run
from workbench.evaluation.scores import FactScores, score_facts
from workbench.facts import Fact
from workbench.runtime.progress import Cancelled, progress

if TYPE_CHECKING:
    from workbench.core.model import Model


def score_all(model: Model, facts: Sequence[Fact], references=None, *, desc: str | None = None, cancel=None,
              chunk: int = 16, metrics: Sequence[str] = generated.DEFAULT_METRICS) -> list[FactScores]:
    """:func:`score_facts` over ``facts`` in chunks (a progress bar when ``desc`` is given).

    Example:
        >>> [s.efficacy for s in score_all(model, facts[:3])]      # doctest: +SKIP
    """
    out: list[FactScores] = []
    starts = range(0, len(facts), chunk)
    for start in (progress(starts, desc=desc, cancel=cancel) if desc else starts):
        refs = references[start : start + chunk] if references is not None else None
        out.extend(score_facts(model, facts[start : start + chunk], references=refs, metrics=metrics))
    return out


#: The seed of the order in which facts enter a curve point's sample.
SAMPLE_SEED = 0


def sample_order(n: int, seed: int = SAMPLE_SEED) -> list[int]:
    """A seeded shuffle of ``range(n)``: a curve point's sample is the first facts of it that are edited.

    Example:
        >>> sample_order(5) == sample_order(5)
        True
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def scored_sample(done: Sequence[int], order: Sequence[int], size: int | None) -> list[int]:
    """The facts of ``done`` an intermediate curve point scores: all of them, or the first
    ``size`` of them in ``order`` (kept in ``done``'s order).

    Example:
        >>> scored_sample([0, 1, 2, 3], [3, 1, 0, 2], 2)
        [1, 3]
    """
    if size is None or len(done) <= size:
        return list(done)
    rank = {j: r for r, j in enumerate(order)}
    chosen = set(sorted(done, key=rank.__getitem__)[:size])
    return [j for j in done if j in chosen]


def _unedited(run: Run) -> tuple[list[FactScores], list[FactRow], list[str], float]:
    """Before any edit: every fact's scores, its row, the fixed generation prompts and their fluency."""
    facts, s = run.facts, run.settings
    # A fixed set of generation prompts spread over the dataset.
    spread = facts[:: max(1, len(facts) // max(1, s.fluency_prompts))][: s.fluency_prompts]
    prompts = [generation_prompts(f, limit=1)[0] for f in spread]
    # Every fact's unedited scores in a few batched passes (one fact at a time costs twice as much).
    befores = score_all(run.model, facts, desc="scores before", cancel=run.cancel, metrics=s.metrics)
    rows = [FactRow(i, f.subject, f.prompt, f.target_true, f.target_new, b.metrics())
            for i, (f, b) in enumerate(zip(facts, befores))]
    return befores, rows, prompts, run.fluency(prompts)


#: What of an edit's ``info`` a curve point keeps (methods that report it: AlphaEdit's).
DIAGNOSTIC_KEYS = ("diagnostics", "null_dim")


def run_sequential(run: Run) -> Outcome:
    """Sequential mode: the edits kept one batch after another, a curve point every ``every`` facts.

    Example:
        >>> run_sequential(run).curve[-1].perplexity      # doctest: +SKIP
    """
    model, facts, s = run.model, run.facts, run.settings
    n, every = len(facts), s.every
    saved = checkpoint.read(run.checkpoint, run) if run.checkpoint is not None else None
    # The unedited scores first, also when resuming: they are the references of every later score.
    befores, rows, prompts, fluency_before = _unedited(run)
    curve = [CurvePoint(0, **curve_rates([r.before for r in rows]), perplexity=run.perplexity_before,
                        fluency=fluency_before)]
    done: list[int] = []
    diagnostics: dict | None = None
    reached = 0
    if saved is not None:
        restored = checkpoint.apply(saved, run)
        reached, done, rows, curve = restored.reached, restored.done, restored.rows, restored.curve
        diagnostics = restored.diagnostics
        run.edit_seconds.append(restored.edit_seconds)
        run.record["resumed"] = list(run.record.get("resumed") or []) + [dict(n=reached)]
    order = sample_order(n)
    stopped_early = interrupted = False
    last_scored: set[int] | None = None  # the facts the last curve point scored (None: every one)
    # batch_size facts per edit call (AlphaEdit's protocol: batches of 100); a curve
    # point whenever the facts edited so far pass a multiple of `every`, and at the end.
    batches = [list(range(b, min(n, b + s.batch_size))) for b in range(reached, n, s.batch_size)]
    try:
        for members in progress(batches, desc=f"sequential {s.method}", cancel=run.cancel):
            first, last_i = members[0], members[-1]
            try:
                handle, seconds = run.edit([facts[i] for i in members])
            except Cancelled:
                raise
            except WorkbenchError as exc:
                for i in members:
                    rows[i].error = str(exc)
            else:
                done.extend(members)
                found = {k: handle.info[k] for k in DIAGNOSTIC_KEYS if k in getattr(handle, "info", {})}
                diagnostics = found or diagnostics
                for i, scores in zip(members, score_facts(model, [facts[i] for i in members],
                                                          references=[befores[i] for i in members],
                                                          batch_size=16, metrics=s.metrics)):
                    # A batch's edit time is shared by its facts.
                    rows[i].seconds = seconds / len(members)
                    rows[i].immediate = scores.metrics()
            if (last_i + 1) // every > first // every or last_i == n - 1:
                # The last point scores every fact edited: a run stopped by its time limit ends here.
                # One stopped by stop_after ends at a point scored like the longer run's own there.
                stop = last_i < n - 1 and run.out_of_time()
                part_done = last_i < n - 1 and s.stop_after is not None and last_i + 1 >= s.stop_after
                scored = done if stop or last_i == n - 1 else scored_sample(done, order, s.score_sample)
                now = score_all(model, [facts[j] for j in scored], [befores[j] for j in scored], metrics=s.metrics)
                scores = {j: sc.metrics() for j, sc in zip(scored, now)}
                for j, sc in scores.items():
                    rows[j].after = sc
                curve.append(CurvePoint(last_i + 1, **curve_rates(list(scores.values())),
                                        perplexity=run.perplexity(), fluency=run.fluency(prompts),
                                        n_scored=len(scored), edit_diagnostics=diagnostics))
                if run.checkpoint is not None:
                    checkpoint.save(run.checkpoint, run, reached=last_i + 1, done=done, rows=rows, curve=curve,
                                    diagnostics=diagnostics)
                last_scored = set(scored)
                if stop or part_done:
                    stopped_early = True
                    rows = _as_last_scored(rows[: last_i + 1], last_scored)
                    break
    except KeyboardInterrupt:
        # Keep what the last curve point measured; the edits after it are reverted by evaluate.
        interrupted = True
        rows = _as_last_scored(rows[: curve[-1].n_edits], last_scored)
    extra = dict(fluency_before=fluency_before, fluency=curve[-1].fluency, perplexity_after=curve[-1].perplexity)
    return Outcome(rows=rows, extra=extra, curve=curve, stopped_early=stopped_early, interrupted=interrupted)


def _as_last_scored(rows: list, scored: set[int] | None) -> list:
    """A run that ends at an intermediate point: its rows' scores after the edits are that point's,
    so a fact the point's sample left out has none (an earlier point's would be out of date)."""
    if scored is not None:
        for r in rows:
            if r.index not in scored:
                r.after = None
    return rows


def run_batch(run: Run) -> Outcome:
    """Batch mode: one edit call with every fact, then every fact scored.

    Example:
        >>> run_batch(run).extra["perplexity_after"]      # doctest: +SKIP
    """
    befores, rows, prompts, fluency_before = _unedited(run)
    if run.cancel is not None:
        run.cancel.check()
    run.edit(list(run.facts))
    for i, sc in enumerate(score_all(run.model, run.facts, befores, desc="scores after", cancel=run.cancel,
                                     metrics=run.settings.metrics)):
        rows[i].after = sc.metrics()
    extra = dict(fluency_before=fluency_before, fluency=run.fluency(prompts), perplexity_after=run.perplexity())
    return Outcome(rows=rows, extra=extra)
