"""What :func:`~workbench.evaluation.evaluate` hands back: :class:`EvalReport` (one
:class:`FactRow` per fact, sequential mode's :class:`CurvePoint` curve), the summary
arithmetic over its rows, and :func:`read_report` for a saved one.

Example:
    >>> report = read_report("assets/results/rome_sequential.json")     # doctest: +SKIP
    >>> report.summary["efficacy_score"], report.interval("efficacy_score")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.evaluation import intervals
from workbench.evaluation.intervals import mean_of
from workbench.evaluation.scores import harmonic_mean
from workbench.facts import IMPLICATION_KINDS
from workbench.results import Result

if TYPE_CHECKING:
    from workbench.core.model import Model

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
           "letter_new", "letter_true", "letter_both", "letter_neither", "related_new", "related_true")
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
    """Sequential mode: the state of the model after ``n_edits`` edits; its rates over ``n_scored``
    of them (fewer than ``n_edits`` where the point scored a sample, see ``score_sample``)."""

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
    n_scored: int | None = None
    #: What the last edit before this point said of itself, where its method reports it
    #: (AlphaEdit's ``diagnostics`` and ``null_dim``): how the damage builds up, batch by batch.
    edit_diagnostics: dict | None = None


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
    from pathlib import Path

    from workbench.runtime.jsonfiles import read_json

    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"no evaluation report at {path}")
    data = read_json(path, "evaluation report")
    return EvalReport.from_dict(data, source=str(path))


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


def rates(scores: Sequence[dict]) -> dict[str, float | None]:
    """The CounterFact rates (summary names) averaged over per-fact scores."""
    return {name: mean_of(s[key] for s in scores) for key, name in _RATES.items()}


def curve_rates(scores: Sequence[dict]) -> dict[str, float | None]:
    """A :class:`CurvePoint`'s rates: :func:`rates` and the generated ones.

    Example:
        >>> one = {"efficacy": 1.0, "paraphrase": 0.5, "neighborhood": 1.0, "implication": None}
        >>> curve_rates([one])["paraphrase_score"], curve_rates([one])["gen_efficacy"]
        (0.5, None)
    """
    return {**rates(scores), **{k: mean_of(s.get(k) for s in scores) for k in _CURVE_GEN}}


def summarise(rows: list[FactRow], **extra) -> dict:
    """The summary of ``rows`` (its rates, their intervals and counts), with ``extra`` added.

    Example:
        >>> summarise(read_report("assets/results/rome_sequential.json").rows)["efficacy_score"]  # doctest: +SKIP
    """
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


def partial_report(rows: list[FactRow], *, method: str, mode: str, model: Model, n_total: int, n_skipped: int,
                   settings: dict) -> EvalReport:
    """The report of a run still going: its rows so far, summarised (no drift, no timing total)."""
    done = sorted(rows, key=lambda r: r.index)
    summary = summarise(done, seconds_per_edit=mean_of([r.seconds for r in done if r.seconds is not None]))
    summary.update(method=method, mode=mode, model=model.name, n=len(done), n_skipped=n_skipped,
                   n_total=n_total, partial=True)
    return EvalReport(summary=summary, rows=done, curve=[], settings=settings)


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
