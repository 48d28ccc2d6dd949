"""Evaluate an editing method over a dataset: scores before and after, drift, cost.

Three modes:

- ``independent``: edit one fact, score it, revert; the next fact starts from
  the unedited model (ROME's protocol).
- ``sequential``: keep every edit. Every ``every`` edits, score *all* facts
  edited so far, the perplexity and the fluency: the degradation curve of
  Gupta et al. (2024). The per-fact "after" scores are those at the end.
- ``batch``: one edit call with all facts (MEMIT, PMET; others stack them).

Every summary rate comes with a 95 % bootstrap interval over facts
(``summary["intervals"][name] = [lo, hi]``); the generated measures
(:mod:`~workbench.evaluation.generated`) sit beside the teacher-forced ones.

The expensive drift measures are sampled: in independent mode, fluency and
perplexity after the edit are measured on every ``every``-th fact.

This module selects the facts and dispatches; the parts live beside it: the checked
arguments in :mod:`~workbench.evaluation.settings`, the runners in
:mod:`~workbench.evaluation.independent` and :mod:`~workbench.evaluation.sequential`
(sharing a :class:`~workbench.evaluation.run.Run`), the report types and the summary
arithmetic in :mod:`~workbench.evaluation.report` (their names importable from here too).

Example:
    >>> report = evaluate(model, wb.bundled_facts(), method="in-context", limit=10)
    >>> report.summary["efficacy_score"]     # doctest: +SKIP
    1.0
    >>> report.to_pandas().head()            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.evaluation import generated
# _Independent and _run_fact: importable from here as before the parts moved out.
from workbench.evaluation.independent import _Independent, _run_fact, resumable_rows, run_independent
from workbench.evaluation.intervals import mean_of
from workbench.evaluation.report import (
    CRITICS,
    IMPLICATION_RATES,
    SUMMARY_KEYS,
    CurvePoint,
    EvalReport,
    EvaluationInterrupted,
    FactRow,
    partial_report,
    read_report,
    summarise,
)
from workbench.evaluation.run import Outcome, Run
from workbench.evaluation.sequential import run_batch, run_sequential
from workbench.evaluation.settings import MODES, EvalSettings
from workbench.facts import Fact
from workbench.runtime.progress import CancelToken

if TYPE_CHECKING:
    from workbench.core.model import Model

__all__ = [
    "CRITICS", "IMPLICATION_RATES", "MODES", "SUMMARY_KEYS", "CurvePoint", "EvalReport", "EvalSettings",
    "EvaluationInterrupted", "FactRow", "evaluate", "read_report",
]

log = logging.getLogger("workbench")

# The names this module had before its parts moved out, for code that imports them from here.
_summarise, _partial_report, _resumable_rows = summarise, partial_report, resumable_rows

#: mode -> its runner: ``runner(run) -> Outcome``.
RUNNERS: dict[str, Callable[[Run], Outcome]] = {
    "independent": run_independent, "sequential": run_sequential, "batch": run_batch,
}


def _without_conflicts(facts: list[Fact]) -> tuple[list[Fact], int]:
    """Drop later facts whose prompt already has another new object in the list."""
    seen: dict[tuple[str, str], str] = {}
    kept = []
    for f in facts:
        key = (f.subject, f.prompt)
        if key in seen and seen[key] != f.target_new:
            continue
        seen[key] = f.target_new
        kept.append(f)
    if len(kept) < len(facts):
        log.warning("dropped %d fact(s) that give an already edited prompt another new object", len(facts) - len(kept))
    return kept, len(facts) - len(kept)


def _select_known(model: Model, facts: list[Fact], limit: int | None, *, check: bool) -> tuple[list[Fact], int]:
    """The first ``limit`` facts the model knows, and how many examined facts it did not."""
    if not check:
        return facts[:limit] if limit is not None else facts, 0
    from workbench.facts import filter_known

    kept: list[Fact] = []
    skipped = 0
    # Filter in chunks so that `--limit 10` on a 1,000-fact file probes a few dozen facts, not all
    # (and the app's 5-fact Compare probes 10 before its first row, not 32: 1.4 s on 2 cores).
    chunk = max(8, 2 * limit) if limit is not None else len(facts)
    for start in range(0, len(facts), chunk):
        part = filter_known(model, facts[start : start + chunk])
        kept.extend(part)
        skipped += len(part.dropped)
        if limit is not None and len(kept) >= limit:
            kept = kept[:limit]
            break
    return kept, skipped


def _selected(model: Model, facts: Sequence[Fact], settings: EvalSettings) -> tuple[list[Fact], int, int]:
    """The facts a run edits: checked, without conflicts where edits stay together, the known
    ones first (``limit`` of them); also how many were unknown and how many conflicted.

    Raises:
        WorkbenchError: no fact left.
    """
    from workbench.editing import active_edits, check_facts

    facts = [check_facts(f)[0] for f in facts]
    n_conflicting = 0
    if settings.mode != "independent":
        # Edits that stay together cannot give one prompt two new objects: keep the first.
        facts, n_conflicting = _without_conflicts(facts)
    if active_edits(model):
        log.warning("%d edit(s) already applied; 'before' scores include them", len(active_edits(model)))
    n_given = len(facts)
    facts, n_skipped = _select_known(model, facts, settings.limit, check=settings.known_only)
    if not facts:
        raise WorkbenchError(
            f"no facts left to evaluate: the model gets none of the {n_given} facts right "
            "(its top-1 next token does not begin the true object)"
        )
    return facts, n_skipped, n_conflicting


def _kept_rows(resume: EvalReport | None, model: Model, facts: list[Fact], settings: EvalSettings,
               record: dict) -> list[FactRow]:
    """A resumed report's rows, checked against this run (noted in ``record["resumed"]``)."""
    if resume is None:
        return []
    kept = resumable_rows(resume, facts, method=settings.method, mode=settings.mode, model=model, settings=record)
    record["resumed"] = list(resume.settings.get("resumed") or []) + [
        dict(n=len(kept), seconds_total=resume.summary.get("seconds_total"))]
    return kept


def _report(run: Run, outcome: Outcome, summary: dict, n_conflicting: int) -> EvalReport:
    """The finished report (raised inside :class:`EvaluationInterrupted` after Ctrl-C)."""
    s = run.settings
    summary.update(method=s.method, mode=s.mode, model=run.model.name, n=len(outcome.rows), n_skipped=run.n_skipped,
                   n_conflicting=n_conflicting, stopped_early=outcome.stopped_early or outcome.interrupted)
    report = EvalReport(summary=summary, rows=outcome.rows, curve=outcome.curve, settings=run.record)
    if outcome.interrupted:
        summary["interrupted"] = True
        raise EvaluationInterrupted(report)
    return report


def _check_checkpoint(checkpoint, mode: str, method: str) -> None:
    """Refuse a checkpoint folder where no checkpoint can be kept, before any work is done."""
    from workbench.editing import method_spec

    if checkpoint is None:
        return
    if mode != "sequential":
        raise WorkbenchError(f"checkpoint= is for sequential runs (mode='sequential'), not mode={mode!r}")
    if method_spec(method).kind == "prompt":
        raise WorkbenchError(f"{method} only rewrites the prompt; its sequential runs are not checkpointed "
                             "(run it without checkpoint=)")


def evaluate(
    model: Model,
    facts: Sequence[Fact],
    *,
    method: str,
    mode: str = "independent",
    every: int = 10,
    limit: int | None = None,
    revert: bool = True,
    cancel: CancelToken | None = None,
    known_only: bool = True,
    perplexity_texts: int = 10,
    perplexity_tokens: int = 128,
    fluency_tokens: int = 40,
    fluency_prompts: int = 5,
    time_limit: float | None = None,
    resume: EvalReport | None = None,
    metrics: Sequence[str] | str = generated.DEFAULT_METRICS,
    workers=1,
    address: str | None = None,
    batch_size: int = 1,
    drift: bool = True,
    on_row: Callable[[EvalReport], None] | None = None,
    search_chunk: int = 1,
    score_sample: int | None = 200,
    stop_after: int | None = None,
    checkpoint: str | Path | None = None,
    **edit_kwargs,
) -> EvalReport:
    """Edit each fact with ``method`` and score it before and after (modes: module docstring).

    Args:
        model: a loaded :class:`~workbench.core.model.Model`.
        facts: facts with ``target_true`` and ``target_new``.
        cancel: a token the UI can trip; raises :class:`Cancelled` between facts.
        resume: independent mode: a report this call's settings would have
            produced that stopped early (a time limit, a cancel, or a crash after
            it was saved). Its rows are kept and the run goes on from the first
            fact it did not reach; the rows must be the first facts of this
            selection, in order, and method, model and edit arguments must match.
        checkpoint: sequential mode, weight edits: a folder where the state after each curve
            point is kept; a call whose folder holds one from the same run (settings, facts,
            model) goes on from it (:mod:`~workbench.evaluation.checkpoint`).
        every other argument: the :class:`~workbench.evaluation.settings.EvalSettings`
            field of its name (``method``, ``mode``, ``every``, ``limit``, ``time_limit``,
            ``workers``, ``on_row``, ...); ``**edit_kwargs`` go to :func:`workbench.editing.edit`.

    Returns:
        :class:`EvalReport`. With ``revert=True`` no edit made here is left applied,
        also when this raises (an error, a cancel, Ctrl-C).

    Raises:
        WorkbenchError: unknown mode or method, no facts left to evaluate, or a
            ``resume`` report that does not fit this call (the reason named).

    Example:
        >>> report = evaluate(model, wb.bundled_facts(), method="rome", mode="sequential", limit=20)  # doctest: +SKIP
        >>> report.curve_frame()[["n_edits", "efficacy_score", "perplexity"]]      # doctest: +SKIP
    """
    called = time.perf_counter()  # time_limit counts from here: selecting known facts is part of the run
    settings = EvalSettings(
        method=method, mode=mode, every=every, limit=limit, revert=revert, known_only=known_only,
        perplexity_texts=perplexity_texts, perplexity_tokens=perplexity_tokens, fluency_tokens=fluency_tokens,
        fluency_prompts=fluency_prompts, time_limit=time_limit, metrics=metrics, workers=workers, address=address,
        batch_size=batch_size, drift=drift, on_row=on_row, edit_kwargs=edit_kwargs, search_chunk=search_chunk,
        score_sample=score_sample, stop_after=stop_after)
    settings.check_model(model)
    _check_checkpoint(checkpoint, mode, method)
    facts, n_skipped, n_conflicting = _selected(model, facts, settings)
    record = settings.record(model)
    kept = _kept_rows(resume, model, facts, settings, record)
    run = Run(model, facts, settings, record, cancel, called, n_skipped, kept=kept,
              checkpoint=Path(checkpoint) if checkpoint is not None else None)
    start = time.perf_counter()
    try:
        # A resumed run keeps the first run's reference point, measured on the same unedited model.
        run.perplexity_before = (resume.summary["perplexity_before"] if kept else run.perplexity()) if drift else None
        outcome = RUNNERS[mode](run)
        if outcome.interrupted and not outcome.rows:
            raise KeyboardInterrupt  # nothing finished: nothing to hand up
        rows, total = outcome.rows, time.perf_counter() - start
        summary = summarise(
            rows, **outcome.extra, perplexity_before=run.perplexity_before,
            # Per fact: a batch call's time is shared by its facts (sequential batch_size > 1, batch mode).
            seconds_per_edit=(sum(run.edit_seconds) / len(rows) if mode == "batch"
                              else mean_of([r.seconds for r in rows if r.seconds is not None])),
            seconds_total=total + ((resume.summary.get("seconds_total") or 0.0) if kept else 0.0),
        )
    finally:
        if revert or mode == "independent":
            run.revert()
    return _report(run, outcome, summary, n_conflicting)
