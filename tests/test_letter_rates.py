"""Letter-test rates of a report: shares, intervals, subject kinds."""

from __future__ import annotations

import pytest

from workbench.evaluation import EvalReport, FactRow, letter_rates, letter_shares


def _row(i, subject, prompt, after, before=None, error=None):
    return FactRow(i, subject, prompt, "Paris", "Rome", before or {"letter_new": 0.0, "letter_true": 0.5,
                                                                "letter_both": 0.0},
                   after=after, error=error)


def test_letter_rates_count_both_for_each_object_and_leave_out_rows_without_letters():
    rows = [
        _row(0, "Eiffel Tower", "The {} is located in the city of",
             {"letter_new": 0.5, "letter_true": 0.0, "letter_both": 0.5}),
        _row(1, "Louvre", "The {} is located in the city of",
             {"letter_new": 0.0, "letter_true": 1.0, "letter_both": 0.0}),
        _row(2, "Big Ben", "The {} is located in the city of", {"efficacy": 1.0}),  # no letters
        _row(3, "Colosseum", "The {} is located in the city of", None, error="no edit"),
    ]
    rates = letter_rates(EvalReport(summary={}, rows=rows))
    assert rates["n"] == 2
    assert rates["new"].mean == pytest.approx(0.5) and rates["old"].mean == pytest.approx(0.75)
    before = letter_rates(EvalReport(summary={}, rows=rows), side="before")
    assert before["old"].mean == pytest.approx(0.5) and before["new"].mean == 0.0
    assert letter_shares(None) == (None, None)


def test_letter_rates_by_subject_kind_and_bad_arguments():
    rows = [_row(0, "Danielle Darrieux", "The mother tongue of {} is",
                 {"letter_new": 1.0, "letter_true": 0.0, "letter_both": 0.0})]
    report = EvalReport(summary={}, rows=rows)
    assert letter_rates(report, kind="person")["n"] == 1
    assert letter_rates(report, kind="place")["n"] == 0 and letter_rates(report, kind="place")["new"] is None
    with pytest.raises(ValueError, match="side"):
        letter_rates(report, side="during")
    with pytest.raises(ValueError, match="kind"):
        letter_rates(report, kind="animal")
