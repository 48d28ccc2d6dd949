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

Example:
    >>> report = evaluate(model, wb.bundled_facts(), method="in-context", limit=10)
    >>> report.summary["efficacy_score"]     # doctest: +SKIP
    1.0
    >>> report.to_pandas().head()            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from workbench.errors import WorkbenchError
from workbench.evaluation import generated, intervals
from workbench.evaluation.intervals import mean_of
from workbench.evaluation.fluency import fluency, generation_prompts
from workbench.evaluation.perplexity import perplexity
from workbench.evaluation.scores import FactScores, harmonic_mean, score_fact, score_facts
from workbench.facts import IMPLICATION_KINDS, Fact
from workbench.progress import Cancelled, CancelToken, progress
from workbench.results import Result

log = logging.getLogger("workbench")

MODES = ("independent", "sequential", "batch")

#: The CounterFact rates averaged into the summary and the curve, and their summary names.
_RATES = {"efficacy": "efficacy_score", "paraphrase": "paraphrase_score",
          "neighborhood": "neighborhood_score", "implication": "implication_score"}
#: Implication rates by kind (per-fact key -> summary name); multi-hop accuracy is one of them.
IMPLICATION_RATES = {f"implication_{k}": f"implication_{k}_score" for k in IMPLICATION_KINDS}
_MAGNITUDES = ("efficacy_magnitude", "paraphrase_magnitude", "neighborhood_magnitude", "implication_prob")
_EASYEDIT = ("easyedit_rewrite_acc", "easyedit_rephrase_acc", "easyedit_locality_acc")
#: The critics' measures: per-fact keys, also their summary names (``None`` when not measured).
CRITICS = ("gen_efficacy", "gen_efficacy_neither", "gen_paraphrase", "gen_paraphrase_neither",
           "gen_neighborhood", "gen_neighborhood_neither", "gen_question", "gen_question_neither",
           "neighborhood_plus", "gen_neighborhood_plus", "gen_neighborhood_plus_neither", "nkl",
           "letter_new", "letter_true", "letter_both", "letter_neither")
#: Independent mode: facts whose unedited scores are taken in one batched pass.
_BEFORE_CHUNK = 16
#: Summary name -> per-fact key, for the names that differ.
_PER_FACT = {name: key for key, name in (*_RATES.items(), *IMPLICATION_RATES.items())}
#: The curve's generated rates (sequential mode).
_CURVE_GEN = ("gen_efficacy", "gen_paraphrase", "gen_neighborhood")


@dataclass
class FactRow(Result):
    """One fact's evaluation: headline scores before and after its edit."""

    index: int
    subject: str
    prompt: str
    target_true: str
    target_new: str
    before: dict
    after: dict | None = None
    #: sequential mode: the scores right after this fact's own edit (``after`` is at the end).
    immediate: dict | None = None
    seconds: float | None = None
    fluency_before: float | None = None
    fluency_after: float | None = None
    perplexity_after: float | None = None
    error: str | None = None


@dataclass
class CurvePoint(Result):
    """Sequential mode: the state of the model after ``n_edits`` edits."""

    n_edits: int
    efficacy_score: float | None
    paraphrase_score: float | None
    neighborhood_score: float | None
    implication_score: float | None
    perplexity: float | None
    fluency: float | None
    gen_efficacy: float | None = None
    gen_paraphrase: float | None = None
    gen_neighborhood: float | None = None


@dataclass
class EvalReport(Result):
    """What :func:`evaluate` returns.

    Attributes:
        summary: the headline numbers (see :data:`SUMMARY_KEYS`); CounterFact
            rates are fractions in [0, 1]; EasyEdit accuracies carry an
            ``easyedit_`` prefix and are a different metric.
        rows: one :class:`FactRow` per evaluated fact.
        curve: sequential mode's degradation curve (point 0 = before any edit).
        settings: the arguments that shaped the numbers.
    """

    summary: dict
    rows: list[FactRow] = field(default_factory=list)
    curve: list[CurvePoint] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.summary[key]

    def to_pandas(self):
        """One row per fact: before_/after_ columns for every headline score."""
        import pandas as pd

        records = []
        for r in self.rows:
            rec = {k: getattr(r, k) for k in ("index", "subject", "prompt", "target_true", "target_new",
                                               "seconds", "fluency_before", "fluency_after", "perplexity_after", "error")}
            for stage in ("before", "after"):
                for k, v in (getattr(r, stage) or {}).items():
                    rec[f"{stage}_{k}"] = v
            records.append(rec)
        return pd.DataFrame(records)

    def values(self, name: str) -> list[float | None]:
        """Per fact (in row order), the value a summary rate averages: ``efficacy_score``,
        ``gen_efficacy``, ``paraphrase_score_before``, ... (None where not measured).

        Example:
            >>> report.values("efficacy_score")[:3]      # doctest: +SKIP
            [1.0, 1.0, 0.0]
        """
        stage, key = ("before", name[: -len("_before")]) if name.endswith("_before") else ("after", name)
        key = _PER_FACT.get(key, key)
        if key not in _PER_FACT.values() and key not in (*_MAGNITUDES, *_EASYEDIT, *CRITICS):
            raise WorkbenchError(f"{name!r} is not a per-fact rate of a summary")
        return [(getattr(r, stage) or {}).get(key) if r.after is not None else None for r in self.rows]

    def interval(self, name: str) -> intervals.Interval | None:
        """A summary rate with its 95 % bootstrap interval over facts (None: not measured).

        Example:
            >>> print(report.interval("gen_efficacy"))      # doctest: +SKIP
            0.610 [0.540, 0.675]
        """
        return intervals.bootstrap(self.values(name))

    def curve_frame(self):
        """The degradation curve as a DataFrame (empty outside sequential mode)."""
        import pandas as pd

        return pd.DataFrame([p.to_dict() for p in self.curve])

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "the report") -> EvalReport:
        """Rebuild a report from :meth:`to_dict` output (e.g. a committed ``assets/results`` file).

        Raises:
            WorkbenchError: a missing or malformed part, named.
        """
        if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
            raise WorkbenchError(f"{source} is not an evaluation report: it has no 'summary' object")
        parts = {"rows": FactRow, "curve": CurvePoint}
        built: dict[str, list] = {}
        for key, kind in parts.items():
            items = data.get(key) or []
            if not isinstance(items, list):
                raise WorkbenchError(f"{source}: '{key}' must be a list, got {type(items).__name__}")
            built[key] = []
            for i, item in enumerate(items):
                try:
                    built[key].append(kind(**item))
                except TypeError as exc:
                    raise WorkbenchError(f"{source}: {key}[{i}] is malformed ({exc})") from None
        return cls(summary=data["summary"], rows=built["rows"], curve=built["curve"], settings=data.get("settings") or {})


def read_report(path) -> EvalReport:
    """Load an :class:`EvalReport` saved with ``report.to_json(path)`` (or by ``benchmarks/results.py``).

    Example:
        >>> rep = read_report("assets/results/rome_sequential.json")     # doctest: +SKIP
        >>> rep.curve_frame()[["n_edits", "efficacy_score", "perplexity"]]  # doctest: +SKIP
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"no evaluation report at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{path} is not valid JSON ({exc})") from None
    return EvalReport.from_dict(data, source=str(path))


def _rates(scores: Sequence[dict]) -> dict[str, float | None]:
    return {name: mean_of(s[key] for s in scores) for key, name in _RATES.items()}


def _curve_rates(scores: Sequence[dict]) -> dict[str, float | None]:
    return {**_rates(scores), **{k: mean_of(s.get(k) for s in scores) for k in _CURVE_GEN}}


def _summarise(rows: list[FactRow], **extra) -> dict:
    done = [r for r in rows if r.after is not None]
    befores = [r.before for r in done]
    afters = [r.after for r in done]
    # Per summary name, the per-fact values it averages (an interval is drawn from them).
    columns: dict[str, list] = {}
    for key, name in _RATES.items():
        columns[name] = [a[key] for a in afters]
        columns[f"{name}_before"] = [b[key] for b in befores]
    for key in (*_MAGNITUDES, *_EASYEDIT):
        columns[key] = [a[key] for a in afters]
    columns["implication_prob_before"] = [b["implication_prob"] for b in befores]
    for key, name in IMPLICATION_RATES.items():
        # .get: rows of reports saved before the kinds were scored lack them.
        columns[name] = [a.get(key) for a in afters]
        columns[f"{name}_before"] = [b.get(key) for b in befores]
    for key in CRITICS:
        # .get: rows of reports saved before these measures existed lack them.
        columns[key] = [a.get(key) for a in afters]
        columns[f"{key}_before"] = [b.get(key) for b in befores]
    summary: dict = {name: mean_of(values) for name, values in columns.items()}
    summary["score"] = harmonic_mean([summary["efficacy_score"], summary["paraphrase_score"], summary["neighborhood_score"]])
    summary["intervals"] = {}
    for name, values in columns.items():
        iv = intervals.bootstrap(values)
        if iv is not None:
            summary["intervals"][name] = [iv.lo, iv.hi]
    # How many facts each implication rate averages: most facts carry few kinds, if any.
    summary["counts"] = {name: sum(v is not None for v in columns[name])
                         for name in ("implication_score", *IMPLICATION_RATES.values())}
    summary.update(extra)
    summary["n_failed"] = sum(r.error is not None for r in rows)
    return summary


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


def _score_all(model, facts: Sequence[Fact], references=None, *, desc: str | None = None, cancel=None,
               chunk: int = 16, metrics: Sequence[str] = generated.DEFAULT_METRICS) -> list[FactScores]:
    """:func:`score_facts` over ``facts`` in chunks (a progress bar when ``desc`` is given)."""
    out: list[FactScores] = []
    starts = range(0, len(facts), chunk)
    for start in (progress(starts, desc=desc, cancel=cancel) if desc else starts):
        refs = references[start : start + chunk] if references is not None else None
        out.extend(score_facts(model, facts[start : start + chunk], references=refs, metrics=metrics))
    return out


def _select_known(model, facts: list[Fact], limit: int | None, *, check: bool) -> tuple[list[Fact], int]:
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


def _resumable_rows(resume: EvalReport, facts: list[Fact], *, method: str, mode: str, model,
                    settings: dict) -> list[FactRow]:
    """The rows of ``resume`` to keep, after checking that it is an earlier part of this very run."""
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

    def run(self, model, i: int, fact: Fact, before: FactScores) -> FactRow:
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


def _score_chunk(model, facts: list[Fact], metrics: tuple) -> list[FactScores]:
    """A worker's share of the unedited scores: one chunk of facts, batched as a serial run batches it."""
    return score_facts(model, facts, metrics=metrics)


def _run_fact(model, item, befores: list[FactScores]) -> FactRow:
    """A worker's call for one fact: ``item`` is (job, index, fact, position in its chunk)."""
    job, i, fact, pos = item
    return job.run(model, i, fact, befores[pos])


def _independent_parallel(model, facts, todo, chunks, chunk_of, job: _Independent, *, workers, address,
                          edit_kwargs, cancel, out_of_time) -> tuple[list[FactRow], bool, bool]:
    """Independent mode on Ray actors: the rows of ``todo`` done, whether a time limit stopped it, and
    whether Ctrl-C did. A fact whose worker failed twice is a row with its ``error``."""
    from workbench.cluster import PoolInterrupted, cache_files, pool_for
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


def evaluate(
    model,
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
    **edit_kwargs,
) -> EvalReport:
    """Edit each fact with ``method`` and score it before and after.

    Args:
        model: a loaded :class:`~workbench.model.Model`.
        facts: facts with ``target_true`` and ``target_new``.
        method: an editing method (see :data:`workbench.editing.METHODS`).
        mode: ``"independent"``, ``"sequential"`` or ``"batch"`` (module docstring).
        every: sequential: a curve point every ``every`` edits; independent:
            fluency and perplexity are measured on every ``every``-th fact.
        limit: evaluate at most this many (known) facts.
        revert: sequential/batch: revert all edits at the end (weights come back
            bitwise). Independent mode always reverts each edit.
        cancel: a token the UI can trip; raises :class:`Cancelled` between facts.
        known_only: first drop the facts the model gets wrong (counted as ``n_skipped``).
        perplexity_texts, perplexity_tokens: held-out texts and their length for perplexity.
        fluency_tokens: tokens generated per fluency prompt.
        fluency_prompts: sequential/batch: size of the fixed set of generation prompts.
        time_limit: seconds after which no new edit is started; the report then
            covers the facts done so far (sequential: up to the last curve point) and
            its summary says ``stopped_early``. For runs that must end on time (a class,
            a lent machine) without losing what was measured.
        resume: independent mode: a report this call's settings would have
            produced that stopped early (a time limit, a cancel, or a crash after
            it was saved). Its rows are kept and the run goes on from the first
            fact it did not reach; the rows must be the first facts of this
            selection, in order, and method, model and edit arguments must match.
        metrics: the measures to take, from
            :data:`~workbench.evaluation.generated.METRICS` (a list or ``"a,b"``);
            the default is all but the slow ``letter``. ``teacher`` is always taken.
        workers: independent mode: facts run on this many Ray actors, each with its own copy
            of the model (``"auto"``: one per CPU; a :class:`~workbench.cluster.Pool`: its warm
            workers, left running after); the report is the one a serial run gives,
            in the same order. Needs the ``cluster`` extra. A fact whose worker fails is tried
            once more on another worker, then reported as that row's ``error``.
        batch_size: sequential mode: facts per edit call (1: one fact at a time; AlphaEdit's
            papers use 100). The batches stay applied one after another.
        drift: measure perplexity and fluency (the model's drift). ``False``, in independent
            mode only: skip both (``None`` in the summary); on a CPU they are most of a short
            comparison's time (the app's Compare of a handful of facts).
        on_row: independent mode, one worker: called after every fact with the report so far
            (its rows, and a summary of them with ``partial=True`` and ``n_total``), so that a
            caller can show a comparison fact by fact; the app's Compare table fills in this way.
        address: with ``workers``: ``None`` starts a local Ray for the run; ``"auto"`` or
            ``"ray://host:port"`` uses a running cluster (its nodes need the workbench installed).
        **edit_kwargs: passed to :func:`workbench.editing.edit` (``layers``, hyperparameters).

    Returns:
        :class:`EvalReport`. With ``revert=True`` no edit made here is left applied,
        also when this raises (an error, a cancel, Ctrl-C).

    Raises:
        WorkbenchError: unknown mode or method, no facts left to evaluate, or a
            ``resume`` report that does not fit this call (the reason named).
    """
    from workbench.editing import CHECKS_KNOWN, METHODS, active_edits, check_facts, edit

    called = time.perf_counter()  # time_limit counts from here: selecting known facts is part of the run
    if mode not in MODES:
        raise WorkbenchError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(MODES)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WorkbenchError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size > 1 and mode != "sequential":
        raise WorkbenchError("batch_size is for sequential runs (batches kept one after another); "
                             + ("an independent run edits one fact per call" if mode == "independent"
                                else "a batch run edits all facts in one call"))
    if not drift and mode != "independent":
        raise WorkbenchError(f"drift=False is for independent mode: {mode} mode's curve is one of perplexity "
                             "and fluency as well as the rates")
    if on_row is not None and mode != "independent":
        raise WorkbenchError(f"on_row reports independent runs fact by fact; a {mode} run's rows are "
                             "scored together at its curve points")
    if not isinstance(every, int) or every < 1:
        raise WorkbenchError(f"every must be a positive integer, got {every!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise WorkbenchError(f"limit must be a positive integer, got {limit!r}")
    if time_limit is not None and not time_limit > 0:
        raise WorkbenchError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    if method not in METHODS:
        raise WorkbenchError(f"unknown editing method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    metrics = generated.check_metrics(metrics)
    from workbench.cluster import check_workers

    workers = check_workers(workers)
    if workers != 1 and mode != "independent":
        raise WorkbenchError(f"workers={workers} splits independent runs only: a {mode} run's edits build on "
                             "each other (run several methods or settings side by side instead)")
    if workers != 1 and on_row is not None:
        raise WorkbenchError(f"on_row is for runs on one worker; workers={workers} finish facts out of order")
    if workers != 1 and active_edits(model):
        raise WorkbenchError(f"workers={workers}: {len(active_edits(model))} edit(s) are applied to this model, and "
                             "the workers load it from disk without them; revert them first or use workers=1")
    if edit_kwargs.get("layers") is not None:
        # Checked once here: a bad layer would otherwise fail every fact, one by one.
        for layer in edit_kwargs["layers"]:
            model.layer_index(layer)
    facts = [check_facts(f)[0] for f in facts]
    n_dropped_conflicts = 0
    if mode != "independent":
        # Edits that stay together cannot give one prompt two new objects: keep the first.
        facts, n_dropped_conflicts = _without_conflicts(facts)
    if active_edits(model):
        log.warning("%d edit(s) already applied; 'before' scores include them", len(active_edits(model)))
    n_given = len(facts)
    facts, n_skipped = _select_known(model, facts, limit, check=known_only)
    if not facts:
        raise WorkbenchError(
            f"no facts left to evaluate: the model gets none of the {n_given} facts right "
            "(its top-1 next token does not begin the true object)"
        )
    n = len(facts)
    settings = dict(every=every, limit=limit, revert=revert, known_only=known_only,
                    perplexity_texts=perplexity_texts, perplexity_tokens=perplexity_tokens,
                    fluency_tokens=fluency_tokens, fluency_prompts=fluency_prompts,
                    time_limit=time_limit, device=str(model.device), workers=getattr(workers, "workers", workers),
                    batch_size=batch_size, drift=drift,
                    edit_kwargs={k: v for k, v in edit_kwargs.items()}, metrics=list(metrics),
                    intervals=dict(method="percentile bootstrap over facts", samples=intervals.SAMPLES,
                                   seed=intervals.SEED, level=intervals.LEVEL))
    kept = _resumable_rows(resume, facts, method=method, mode=mode, model=model, settings=settings) if resume is not None else []
    if resume is not None:
        settings["resumed"] = list(resume.settings.get("resumed") or []) + [
            dict(n=len(kept), seconds_total=resume.summary.get("seconds_total"))]

    def ppl() -> float:
        return perplexity(model, n_texts=perplexity_texts, max_tokens=perplexity_tokens)

    def flu(prompts: list[str]) -> float:
        return fluency(model, prompts, max_new_tokens=fluency_tokens)[0]

    # A fixed set of generation prompts spread over the dataset (sequential/batch).
    spread = facts[:: max(1, n // max(1, fluency_prompts))][:fluency_prompts]
    fixed_prompts = [generation_prompts(f, limit=1)[0] for f in spread]

    handles: list = []
    rows: list[FactRow] = []
    curve: list[CurvePoint] = []
    edit_seconds: list[float] = []
    start = time.perf_counter()
    stopped_early = False
    interrupted = False

    def out_of_time() -> bool:
        return time_limit is not None and time.perf_counter() - called > time_limit

    call_kwargs = dict(edit_kwargs)
    # Evaluation scores every edit as it is made, the ones that miss their target too.
    call_kwargs.setdefault("min_prob", 0.0)
    if known_only and "check_known" not in call_kwargs and method in CHECKS_KNOWN:
        # Every fact was just checked to be known; the method's own check would probe it again.
        call_kwargs["check_known"] = False

    def do_edit(batch: list[Fact]):
        t0 = time.perf_counter()
        h = edit(model, batch if len(batch) > 1 else batch[0], method=method, **call_kwargs)
        handles.append(h)
        edit_seconds.append(time.perf_counter() - t0)
        return h, edit_seconds[-1]

    def new_row(i: int, fact: Fact, before: FactScores) -> FactRow:
        return FactRow(i, fact.subject, fact.prompt, fact.target_true, fact.target_new, before.metrics())

    try:
        # A resumed run keeps the first run's reference point, measured on the same unedited model.
        perplexity_before = (resume.summary["perplexity_before"] if kept else ppl()) if drift else None
        extra: dict = {}
        # Every fact's unedited scores in a few batched passes (one fact at a time costs twice as much).
        befores: list[FactScores | None] = [None] * n
        if mode != "independent":
            befores = _score_all(model, facts, desc="scores before", cancel=cancel, metrics=metrics)

        if mode == "independent":
            job = _Independent(method=method, call_kwargs=call_kwargs, every=every if drift else 0,
                               metrics=tuple(metrics),
                               perplexity_texts=perplexity_texts, perplexity_tokens=perplexity_tokens,
                               fluency_tokens=fluency_tokens)
            done_idx = {r.index for r in kept}
            # The facts this call edits, and the chunks their unedited scores are taken in (serial and
            # parallel runs chunk alike, so that both score the same batches and give the same numbers).
            todo = [i for i in range(n) if i not in done_idx]
            chunks = [todo[c : c + _BEFORE_CHUNK] for c in range(0, len(todo), _BEFORE_CHUNK)]
            chunk_of = {i: c for c, members in enumerate(chunks) for i in members}
            if workers != 1:
                new_rows, stopped_early, interrupted = _independent_parallel(
                    model, facts, todo, chunks, chunk_of, job, workers=workers, address=address,
                    edit_kwargs=edit_kwargs, cancel=cancel, out_of_time=out_of_time)
                rows = sorted([*kept, *new_rows], key=lambda r: r.index)
            else:
                rows.extend(kept)

                def before_of(i: int) -> FactScores:
                    # The unedited model is scored a chunk of facts at a time, as the run reaches
                    # them: a run that stops at its time limit has not spent it on facts it never edits.
                    if befores[i] is None:
                        members = chunks[chunk_of[i]]
                        for j, scores in zip(members, score_facts(model, [facts[j] for j in members],
                                                                  metrics=metrics)):
                            befores[j] = scores
                    return befores[i]

                try:
                    for i in progress(todo, desc=f"evaluate {method}", cancel=cancel):
                        if out_of_time():
                            stopped_early = True
                            break
                        rows.append(job.run(model, i, facts[i], before_of(i)))
                        if on_row is not None:
                            on_row(_partial_report(rows, method=method, mode=mode, model=model, n_total=n,
                                                   n_skipped=n_skipped, settings=settings))
                except KeyboardInterrupt:
                    # Keep every fact finished so far; the one in hand is dropped (its edit was
                    # never committed, or job.run reverted it).
                    interrupted = True
                rows.sort(key=lambda r: r.index)
            # From the rows, so that a resumed run's summary covers the kept rows too.
            sampled = [r for r in rows if r.after is not None and r.perplexity_after is not None]
            extra = dict(fluency_before=mean_of(r.fluency_before for r in sampled),
                         fluency=mean_of(r.fluency_after for r in sampled),
                         perplexity_after=mean_of(r.perplexity_after for r in sampled))
            edit_seconds[:] = [r.seconds for r in rows if r.seconds is not None]
        else:
            rows = [new_row(i, f, b) for i, (f, b) in enumerate(zip(facts, befores))]
            fluency_before = flu(fixed_prompts)
            if mode == "sequential":
                curve.append(CurvePoint(0, **_curve_rates([r.before for r in rows]), perplexity=perplexity_before,
                                        fluency=fluency_before))
                done: list[int] = []
                # batch_size facts per edit call (AlphaEdit's protocol: batches of 100); a curve
                # point whenever the facts edited so far pass a multiple of `every`, and at the end.
                batches = [list(range(b, min(n, b + batch_size))) for b in range(0, n, batch_size)]
                try:
                    for members in progress(batches, desc=f"sequential {method}", cancel=cancel):
                        first, last_i = members[0], members[-1]
                        try:
                            handle, seconds = do_edit([facts[i] for i in members])
                        except Cancelled:
                            raise
                        except WorkbenchError as exc:
                            for i in members:
                                rows[i].error = str(exc)
                        else:
                            done.extend(members)
                            for i, scores in zip(members, score_facts(model, [facts[i] for i in members],
                                                                      references=[befores[i] for i in members],
                                                                      batch_size=16, metrics=metrics)):
                                # A batch's edit time is shared by its facts.
                                rows[i].seconds = seconds / len(members)
                                rows[i].immediate = scores.metrics()
                        if (last_i + 1) // every > first // every or last_i == n - 1:
                            now = _score_all(model, [facts[j] for j in done], [befores[j] for j in done],
                                             metrics=metrics)
                            scores = {j: s.metrics() for j, s in zip(done, now)}
                            for j, s in scores.items():
                                rows[j].after = s
                            curve.append(CurvePoint(last_i + 1, **_curve_rates(list(scores.values())),
                                                    perplexity=ppl(), fluency=flu(fixed_prompts)))
                            if last_i < n - 1 and out_of_time():
                                stopped_early = True
                                rows = rows[: last_i + 1]
                                break
                except KeyboardInterrupt:
                    # Keep what the last curve point measured; the edits after it are reverted below.
                    interrupted = True
                    rows = rows[: curve[-1].n_edits]
                extra = dict(fluency_before=fluency_before, fluency=curve[-1].fluency,
                             perplexity_after=curve[-1].perplexity)
            else:  # batch
                if cancel is not None:
                    cancel.check()
                do_edit(list(facts))
                for i, s in enumerate(_score_all(model, facts, befores, desc="scores after", cancel=cancel,
                                                 metrics=metrics)):
                    rows[i].after = s.metrics()
                extra = dict(fluency_before=fluency_before, fluency=flu(fixed_prompts), perplexity_after=ppl())
        if interrupted and not rows:
            raise KeyboardInterrupt  # nothing finished: nothing to hand up
        total = time.perf_counter() - start
        n = len(rows)
        summary = _summarise(
            rows, **extra, perplexity_before=perplexity_before,
            # Per fact: a batch call's time is shared by its facts (sequential batch_size > 1, batch mode).
            seconds_per_edit=(sum(edit_seconds) / n if mode == "batch"
                              else mean_of([r.seconds for r in rows if r.seconds is not None])),
            seconds_total=total + ((resume.summary.get("seconds_total") or 0.0) if kept else 0.0),
        )
    finally:
        if revert or mode == "independent":
            # Newest first: each revert is then exact, whatever the methods touched.
            for h in reversed(handles):
                if h.active:
                    h.revert()
    summary.update(method=method, mode=mode, model=model.name, n=n, n_skipped=n_skipped,
                   n_conflicting=n_dropped_conflicts, stopped_early=stopped_early or interrupted)
    report = EvalReport(summary=summary, rows=rows, curve=curve, settings=settings)
    if interrupted:
        summary["interrupted"] = True
        raise EvaluationInterrupted(report)
    return report


def _partial_report(rows: list[FactRow], *, method: str, mode: str, model, n_total: int, n_skipped: int,
                    settings: dict) -> EvalReport:
    """The report of a run still going: its rows so far, summarised (no drift, no timing total)."""
    done = sorted(rows, key=lambda r: r.index)
    summary = _summarise(done, seconds_per_edit=mean_of([r.seconds for r in done if r.seconds is not None]))
    summary.update(method=method, mode=mode, model=model.name, n=len(done), n_skipped=n_skipped,
                   n_total=n_total, partial=True)
    return EvalReport(summary=summary, rows=done, curve=[], settings=settings)


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`evaluate`: a ``KeyboardInterrupt`` that carries what was done.

    ``report`` holds every fact finished before the interrupt (independent mode: in
    order, so ``evaluate(..., resume=report)`` goes on from there; sequential mode: up
    to the last curve point). Every edit is reverted before it is raised.

    Example:
        >>> try:                                                   # doctest: +SKIP
        ...     report = wb.evaluate(model, facts, method="rome")
        ... except EvaluationInterrupted as stop:
        ...     report = stop.report
    """

    def __init__(self, report: EvalReport) -> None:
        super().__init__(f"interrupted after {report.summary['n']} facts")
        self.report = report


#: Keys every summary carries (the CLI's JSON contract).
SUMMARY_KEYS = (
    "method", "mode", "model", "n", "n_skipped", "n_failed", "n_conflicting",
    "efficacy_score", "paraphrase_score", "neighborhood_score", "implication_score", "score",
    *IMPLICATION_RATES.values(),
    "efficacy_magnitude", "paraphrase_magnitude", "neighborhood_magnitude", "implication_prob",
    "easyedit_rewrite_acc", "easyedit_rephrase_acc", "easyedit_locality_acc",
    "fluency_before", "fluency", "perplexity_before", "perplexity_after", "seconds_per_edit",
    *CRITICS, "intervals", "counts",
)
