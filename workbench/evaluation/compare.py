"""Compare editing methods on the same facts: one table, one row per method.

Example:
    >>> table = compare(model, wb.bundled_facts(), methods=["in-context", "retrieval"], limit=20)
    >>> table.to_pandas()[["method", "efficacy_score", "neighborhood_score"]]   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from workbench.errors import WorkbenchError
from workbench.evaluation import intervals
from workbench.evaluation.evaluate import EvalReport, _select_known, _without_conflicts, evaluate
from workbench.facts import Fact
from workbench.core.model import Model
from workbench.results import Result


@dataclass
class CompareReport(Result):
    """Reports of several methods on the same facts.

    Attributes:
        reports: one :class:`EvalReport` per method, in the order asked.
    """

    reports: list[EvalReport] = field(default_factory=list)

    def __getitem__(self, method: str) -> EvalReport:
        for r in self.reports:
            if r.summary["method"] == method:
                return r
        raise KeyError(method)

    def to_dict(self) -> dict:
        return {"reports": [r.to_dict() for r in self.reports]}

    def to_pandas(self):
        """One row per method: its summary (CounterFact rates, EasyEdit accuracies, drift, cost)."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in r.summary.items() if k != "intervals"} for r in self.reports])

    def differences(self, metric: str = "efficacy_score", *, baseline: str | None = None):
        """Paired differences ``method - baseline`` of a rate on the same facts, with 95 % intervals.

        Facts are matched by row (every report holds the same facts in the same
        order); a fact counts when both methods have a value for it. An interval
        that excludes 0 is a difference the facts support.

        Args:
            metric: a summary rate (``efficacy_score``, ``gen_efficacy``, ``nkl``, ...).
            baseline: the method every other one is compared with (default: the first).

        Returns:
            A DataFrame: method, baseline, metric, difference, lo, hi, n.

        Example:
            >>> table.differences("gen_efficacy", baseline="in-context")   # doctest: +SKIP
        """
        import pandas as pd

        if not self.reports:
            raise WorkbenchError("the comparison holds no reports")
        base = self[baseline] if baseline is not None else self.reports[0]
        base_rows = [(r.subject, r.target_new) for r in base.rows]
        rows = []
        for report in self.reports:
            if report is base:
                continue
            if [(r.subject, r.target_new) for r in report.rows] != base_rows:
                raise WorkbenchError(f"{report.summary['method']} and {base.summary['method']} were not run on "
                                     "the same facts: no paired difference")
            iv = intervals.paired_difference(report.values(metric), base.values(metric))
            rows.append(dict(method=report.summary["method"], baseline=base.summary["method"], metric=metric,
                             difference=iv.mean if iv else None, lo=iv.lo if iv else None,
                             hi=iv.hi if iv else None, n=iv.n if iv else 0))
        return pd.DataFrame(rows, columns=["method", "baseline", "metric", "difference", "lo", "hi", "n"])


def compare(
    model: Model,
    facts: Sequence[Fact],
    *,
    methods: Sequence[str],
    mode: str = "independent",
    limit: int | None = None,
    method_kwargs: dict[str, dict] | None = None,
    on_update: Callable[[CompareReport], None] | None = None,
    **kwargs,
) -> CompareReport:
    """Evaluate each method on the same known facts (filtered once).

    Args:
        model: a loaded Model.
        facts: facts with true and new objects.
        methods: editing method names.
        mode: evaluation mode for all methods.
        limit: at most this many known facts.
        method_kwargs: per-method edit hyperparameters, ``{"rome": {"layers": [5]}}``.
        on_update: independent mode: called after every fact with the comparison so far (the
            methods done, then the running one's partial report, ``summary["partial"]``).
        **kwargs: passed to :func:`evaluate` for every method.
    """
    methods = list(methods)
    if not methods:
        raise WorkbenchError("give at least one method to compare")
    method_kwargs = method_kwargs or {}
    facts = list(facts)
    if mode != "independent":
        facts, _ = _without_conflicts(facts)
    known, skipped = _select_known(model, facts, limit, check=kwargs.pop("known_only", True))
    if not known:
        raise WorkbenchError(f"no facts left to compare: the model gets none of the {len(facts)} facts right")
    reports = []
    for m in methods:
        if on_update is not None:
            def on_row(partial: EvalReport, done=tuple(reports)) -> None:
                partial.summary["n_skipped"] = skipped
                on_update(CompareReport([*done, partial]))

            kwargs["on_row"] = on_row
        report = evaluate(model, known, method=m, mode=mode, known_only=False, **kwargs, **method_kwargs.get(m, {}))
        report.summary["n_skipped"] = skipped
        reports.append(report)
    return CompareReport(reports)
