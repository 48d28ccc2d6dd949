"""Letter-test rates of a report: how often letters about the subject assert the new object.

A fact's letter scores (``metrics="letter"``, :mod:`~workbench.evaluation.critics`) give the
share of its letters judged ``new``, ``true``, ``both`` or ``neither``. A letter judged
``both`` asserts each object, so it counts for each here. :func:`letter_rates` summarises a
report's rows with 95 % bootstrap intervals over facts, all together or by the subject's kind
(place, person, thing: the kind the letter prompts were written for).

Example:
    >>> rates = letter_rates(wb.read_report("assets/results/letters/rome_independent.json"))  # doctest: +SKIP
    >>> rates["new"].mean, rates["n"]                                                       # doctest: +SKIP
    (0.139, 113)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.evaluation.intervals import Interval, bootstrap

if TYPE_CHECKING:
    from workbench.evaluation.report import EvalReport, FactRow

KINDS = ("place", "person", "thing")


def letter_shares(scores: dict | None) -> tuple[float | None, float | None]:
    """(share asserting the new object, share asserting the old one) of one side of a row.

    Example:
        >>> letter_shares({"letter_new": 0.5, "letter_true": 0.0, "letter_both": 1 / 6})
        (0.6666666666666666, 0.16666666666666666)
        >>> letter_shares({"efficacy": 1.0})
        (None, None)
    """
    if not scores or scores.get("letter_new") is None:
        return None, None
    both = scores.get("letter_both") or 0.0
    return scores["letter_new"] + both, scores["letter_true"] + both


def row_kind(row: FactRow) -> str:
    """The subject kind a row's letter prompts were written for."""
    from workbench.evaluation.relations import subject_kind
    from workbench.facts import Fact

    return subject_kind(Fact(row.subject, row.prompt, row.target_true, row.target_new))


def letter_rows(report: EvalReport) -> list[FactRow]:
    """The rows with letters after the edit (errors and rows without letters left out)."""
    return [r for r in report.rows if r.error is None and letter_shares(r.after)[0] is not None]


def letter_rates(report: EvalReport, *, side: str = "after", kind: str | None = None) -> dict:
    """``{"new": Interval, "old": Interval, "n": facts}`` over the report's letter rows
    (``side``: ``"after"`` the edit or ``"before"`` it; ``kind``: only subjects of that kind).

    Raises:
        ValueError: an unknown side or kind.
    """
    if side not in ("after", "before"):
        raise ValueError(f"side must be 'after' or 'before', got {side!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    rows = [r for r in letter_rows(report) if kind is None or row_kind(r) == kind]
    pairs = [letter_shares(getattr(r, side)) for r in rows]
    new: Interval | None = bootstrap([p[0] for p in pairs])
    old: Interval | None = bootstrap([p[1] for p in pairs])
    return {"new": new, "old": old, "n": len(rows)}
