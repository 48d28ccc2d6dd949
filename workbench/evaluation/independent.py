"""Independent mode: edit one fact, score it, revert; the next fact starts from the
unedited model (ROME's protocol).

Facts run one after another (``on_row`` called after each), or on Ray workers
(``workers``); a run stops before a new edit once past its time limit, keeps every
fact finished when Ctrl-C (or the CLI's SIGTERM) comes, and goes on from a saved
report (``resume``) checked by :func:`resumable_rows`.

Example:
    >>> outcome = run_independent(run)                # doctest: +SKIP
    >>> outcome.rows[0].after["efficacy"]            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.evaluation.fluency import fluency, generation_prompts
from workbench.evaluation.intervals import mean_of
from workbench.evaluation.perplexity import perplexity
from workbench.evaluation.report import EvalReport, FactRow, partial_report
from workbench.evaluation.run import Outcome, Run
from workbench.evaluation.scores import FactScores, score_fact, score_facts
from workbench.facts import Fact
from workbench.runtime.progress import Cancelled, progress

if TYPE_CHECKING:
    from workbench.evaluation.settings import EvalSettings
    from workbench.core.model import Model

log = logging.getLogger("workbench")

#: Facts whose unedited scores are taken in one batched pass.
_BEFORE_CHUNK = 16


def resumable_rows(resume: EvalReport, facts: list[Fact], *, method: str, mode: str, model: Model,
                   settings: dict) -> list[FactRow]:
    """The rows of ``resume`` to keep, after checking that it is an earlier part of this very run.

    Example:
        >>> kept = resumable_rows(read_report("part.json"), facts, method="rome", mode="independent",
        ...                       model=model, settings=record)      # doctest: +SKIP
    """
    s = resume.summary
    if mode != "independent":
        raise WorkbenchError(f"only independent runs can be resumed (a {mode} run's edits build on each other)")
    for key, want in (("method", method), ("mode", mode), ("model", model.name)):
        if s.get(key) != want:
            raise WorkbenchError(f"cannot resume: the report's {key} is {s.get(key)!r}, this run's is {want!r}")
    # Arguments that change a row's numbers must be the same (device, time limit and limit may differ).
    # A report from before the critics' measures took the teacher-forced ones only.
    earlier = {"metrics": ["teacher"], "drift": True, **resume.settings}
    for key in ("every", "drift", "known_only", "perplexity_texts", "perplexity_tokens", "fluency_tokens", "edit_kwargs",
                "metrics"):
        if key in earlier and earlier[key] != settings[key]:
            raise WorkbenchError(f"cannot resume: the report was made with {key}={earlier[key]!r}, "
                                 f"this run has {key}={settings[key]!r}")
    rows = sorted(resume.rows, key=lambda r: r.index)
    # A parallel run stopped by Ctrl-C may have finished facts after one it had not: rows name their index.
    seen: set[int] = set()
    for row in rows:
        i = row.index
        if not isinstance(i, int) or i in seen or not 0 <= i < len(facts):
            raise WorkbenchError(f"cannot resume: the report's row for {row.subject!r} has index {i!r}, "
                                 f"which is not one of this run's {len(facts)} facts (or is repeated)")
        seen.add(i)
        fact = facts[i]
        if (row.subject, row.prompt, row.target_true, row.target_new) != (
                fact.subject, fact.prompt, fact.target_true, fact.target_new):
            raise WorkbenchError(f"cannot resume: the report's row {i} ({row.subject!r} -> {row.target_new!r}) is not "
                                 f"this run's fact {i} ({fact.subject!r} -> {fact.target_new!r})")
    return rows


@dataclass(frozen=True)
class _Independent:
    """What one independent-mode fact needs besides the model; picklable, so workers get it too."""

    method: str
    call_kwargs: dict
    every: int
    metrics: tuple
    perplexity_texts: int
    perplexity_tokens: int
    fluency_tokens: int

    @classmethod
    def of(cls, settings: EvalSettings, call_kwargs: dict) -> _Independent:
        s = settings
        return cls(method=s.method, call_kwargs=call_kwargs, every=s.every if s.drift else 0,
                   metrics=tuple(s.metrics), perplexity_texts=s.perplexity_texts,
                   perplexity_tokens=s.perplexity_tokens, fluency_tokens=s.fluency_tokens)

    def run(self, model: Model, i: int, fact: Fact, before: FactScores) -> FactRow:
        """Edit ``fact``, score it, revert: row ``i`` of the report (an edit that fails is a row's error)."""
        from workbench.editing import edit

        row = FactRow(i, fact.subject, fact.prompt, fact.target_true, fact.target_new, before.metrics())
        # Fluency and perplexity are sampled on every `every`-th fact of the selection.
        sample = self.every > 0 and i % self.every == 0  # every 0: not at all (drift=False)
        prompts = generation_prompts(fact, limit=1)
        if sample:
            row.fluency_before = fluency(model, prompts, max_new_tokens=self.fluency_tokens)[0]
        t0 = time.perf_counter()
        try:
            handle = edit(model, fact, method=self.method, **self.call_kwargs)
        except Cancelled:
            raise
        except WorkbenchError as exc:
            row.error = str(exc)
            return row
        row.seconds = time.perf_counter() - t0
        try:
            row.after = score_fact(model, fact, reference=before, metrics=self.metrics).metrics()
            if sample:
                row.fluency_after = fluency(model, prompts, max_new_tokens=self.fluency_tokens)[0]
                row.perplexity_after = perplexity(model, n_texts=self.perplexity_texts,
                                                  max_tokens=self.perplexity_tokens)
        finally:
            handle.revert()
        return row


def _score_chunk(model: Model, facts: list[Fact], metrics: tuple) -> list[FactScores]:
    """A worker's share of the unedited scores: one chunk of facts, batched as a serial run batches it."""
    return score_facts(model, facts, metrics=metrics)


def _run_fact(model: Model, item, befores: list[FactScores]) -> FactRow:
    """A worker's call for one fact: ``item`` is (job, index, fact, position in its chunk)."""
    job, i, fact, pos = item
    return job.run(model, i, fact, befores[pos])


def run_independent(run: Run) -> Outcome:
    """Every fact of ``run`` not in ``run.kept`` (a resumed report's rows), one edit at a time.

    Example:
        >>> run_independent(run).extra["perplexity_after"]      # doctest: +SKIP
    """
    s, kept = run.settings, run.kept
    job = _Independent.of(s, run.call_kwargs)
    done_idx = {r.index for r in kept}
    # The facts this call edits, and the chunks their unedited scores are taken in: fixed blocks
    # of the selection, done facts included. A sampled letter depends on its batch, so this way
    # a resumed run's are an unbroken run's, every method's run samples the same batches (read
    # from the text cache after the first), and serial and parallel runs give the same numbers.
    todo = [i for i in range(len(run.facts)) if i not in done_idx]
    starts = sorted({i - i % _BEFORE_CHUNK for i in todo})
    chunks = [list(range(c, min(c + _BEFORE_CHUNK, len(run.facts)))) for c in starts]
    chunk_of = {i: k for k, members in enumerate(chunks) for i in members if i not in done_idx}
    if s.workers != 1:
        new_rows, stopped_early, interrupted = _independent_parallel(
            run.model, run.facts, todo, chunks, chunk_of, job, workers=s.workers, address=s.address,
            edit_kwargs=s.edit_kwargs, cancel=run.cancel, out_of_time=run.out_of_time)
        rows = sorted([*kept, *new_rows], key=lambda r: r.index)
    else:
        rows, stopped_early, interrupted = _independent_serial(run, job, kept, todo, chunks, chunk_of)
    # From the rows, so that a resumed run's summary covers the kept rows too.
    sampled = [r for r in rows if r.after is not None and r.perplexity_after is not None]
    extra = dict(fluency_before=mean_of(r.fluency_before for r in sampled),
                 fluency=mean_of(r.fluency_after for r in sampled),
                 perplexity_after=mean_of(r.perplexity_after for r in sampled))
    return Outcome(rows=rows, extra=extra, stopped_early=stopped_early, interrupted=interrupted)


def _independent_serial(run: Run, job: _Independent, kept: list[FactRow], todo: list[int],
                        chunks: list[list[int]], chunk_of: dict[int, int]) -> tuple[list[FactRow], bool, bool]:
    """Independent mode in this process: the rows (``kept`` and ``todo``'s, in fact order), whether a
    time limit stopped it, and whether Ctrl-C did."""
    model, facts, s = run.model, run.facts, run.settings
    befores: list[FactScores | None] = [None] * len(facts)

    def before_of(i: int) -> FactScores:
        # The unedited model is scored a chunk of facts at a time, as the run reaches
        # them: a run that stops at its time limit has not spent it on facts it never edits.
        if befores[i] is None:
            members = chunks[chunk_of[i]]
            try:
                scored = score_facts(model, [facts[j] for j in members], metrics=s.metrics)
            except WorkbenchError:
                # One bad record must not cost its chunk: score this fact alone (its own error, if it is the bad one).
                return score_facts(model, [facts[i]], metrics=s.metrics)[0]
            for j, scores in zip(members, scored):
                befores[j] = scores
        return befores[i]

    rows = list(kept)
    stopped_early = interrupted = False
    searches = _Searches(run, job, todo)
    try:
        for i in progress(todo, desc=f"evaluate {s.method}", cancel=run.cancel):
            if run.out_of_time():
                stopped_early = True
                break
            try:
                with searches.ahead_of(i):
                    rows.append(job.run(model, i, facts[i], before_of(i)))
            except Cancelled:
                raise
            except WorkbenchError as exc:
                # A fact that cannot be scored (a bad record) is its row's error; the run goes on.
                f = facts[i]
                rows.append(FactRow(i, f.subject, f.prompt, f.target_true, f.target_new, before={}, error=str(exc)))
            if s.on_row is not None:
                s.on_row(partial_report(rows, method=s.method, mode=s.mode, model=model, n_total=len(facts),
                                        n_skipped=run.n_skipped, settings=run.record))
    except KeyboardInterrupt:
        # Keep every fact finished so far; the one in hand is dropped (its edit was
        # never committed, or job.run reverted it).
        interrupted = True
    finally:
        searches.store.close()
    rows.sort(key=lambda r: r.index)
    return rows, stopped_early, interrupted


class _Searches:
    """The target searches of the next ``search_chunk`` facts, made in one batch when the run
    reaches the first of them (see :func:`workbench.editing.targets.prefetched`); each edit
    then takes its own. Methods that declare no search, and chunks of 1, search in the edit."""

    def __init__(self, run: Run, job: _Independent, todo: list[int]) -> None:
        self.run, self.job, self.todo = run, job, todo
        self.chunk = run.settings.search_chunk
        self.covered: set[int] = set()
        self.store = contextlib.ExitStack()

    @contextlib.contextmanager
    def ahead_of(self, i: int):
        from workbench.editing import plan_search
        from workbench.editing.targets import prefetched

        if self.chunk > 1 and i not in self.covered:
            self.store.close()
            at = self.todo.index(i)
            members = self.todo[at : at + self.chunk]
            facts = self.run.facts
            requests = [plan_search(self.run.model, facts[j], self.job.method, **self.job.call_kwargs)
                        for j in members]
            self.covered = set(members)
            if all(r is not None for r in requests) and len(requests) > 1:
                self.store = contextlib.ExitStack()
                self.store.enter_context(prefetched(self.run.model, requests, chunk=self.chunk))
        try:
            yield
        except BaseException:
            self.store.close()
            raise
        if i == self.todo[-1] or i not in self.covered:
            self.store.close()


def _independent_parallel(model: Model, facts, todo, chunks, chunk_of, job: _Independent, *, workers, address,
                          edit_kwargs, cancel, out_of_time) -> tuple[list[FactRow], bool, bool]:
    """Independent mode on Ray actors: the rows of ``todo`` done, whether a time limit stopped it, and
    whether Ctrl-C did. A fact whose worker failed twice is a row with its ``error``."""
    from workbench.runtime.cluster import PoolInterrupted, cache_files, pool_for
    from workbench.editing.stats import DEFAULT_SAMPLES, statistics_files

    # C of the edited layers, computed here once (if not cached) and shipped to every worker.
    files = cache_files(statistics_files(model, job.method, layers=edit_kwargs.get("layers"),
                                         samples=edit_kwargs.get("samples", DEFAULT_SAMPLES)))
    pos_of = {i: chunks[chunk_of[i]].index(i) for i in todo}
    items = [(job, i, facts[i], pos_of[i]) for i in todo]

    def shared(k: int):
        c = chunk_of[todo[k]]
        return c, _score_chunk, ([facts[j] for j in chunks[c]], job.metrics)

    interrupted = False
    with pool_for(model, workers, address=address, files=files) as pool:
        log.info("evaluating on %d Ray workers, %d torch thread(s) each", pool.workers, pool.threads)
        try:
            outcomes = pool.map(_run_fact, items, desc=f"evaluate {job.method} ({pool.workers} workers)",
                                shared=shared, cancel=cancel, stop=out_of_time)
        except PoolInterrupted as stop:
            outcomes, interrupted = stop.results, True
    rows = []
    for (_, i, fact, _), out in zip(items, outcomes):
        if out is None:
            continue
        if out.ok:
            rows.append(out.value)
        else:
            # The worker failed on it twice: the fact is accounted for, with why.
            rows.append(FactRow(i, fact.subject, fact.prompt, fact.target_true, fact.target_new, before={},
                                error=f"worker failure: {out.error}"))
    stopped_early = not interrupted and any(out is None for out in outcomes)
    return rows, stopped_early, interrupted
