"""Paired differences between the committed critics' runs (issue 39), on the facts both reached.

    python benchmarks/critics_differences.py [--baseline rome] [--metrics gen_efficacy,gen_paraphrase,...]
    python benchmarks/critics_differences.py --wide     # docs/results.md's table: a row per method

Every ``assets/results/<method>_independent_critics.json`` holds the first n of the same 200
facts, in the same order, so a run stopped by its time limit can still be paired, fact by fact,
with the baseline's first n. Prints ``method - baseline`` per measure with its 95 % interval
(a bootstrap over the shared facts; an interval that excludes 0 is a difference those facts
support) and a Markdown table with ``--markdown`` (a row per method and measure) or ``--wide``
(a row per method, a column per measure, the facts paired after the method's name and after a
measure where fewer facts have it, as for neighbours).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import workbench as wb  # noqa: E402
from workbench.evaluation.compare import CompareReport  # noqa: E402

METRICS = ("gen_efficacy", "gen_paraphrase", "gen_question", "gen_neighborhood", "neighborhood_plus", "nkl")


def runs() -> dict[str, object]:
    """The committed critics' runs by method (the plain "critics" tag only)."""
    out = {}
    for path in sorted((ROOT / "assets" / "results").glob("*_independent_critics.json")):
        out[path.name.removesuffix("_independent_critics.json")] = wb.read_report(path)
    return out


def differences(baseline: str, metrics=METRICS):
    """One DataFrame: method, baseline, metric, difference, lo, hi, n (the facts both reached)."""
    import pandas as pd

    reports = runs()
    if baseline not in reports:
        raise SystemExit(f"no critics' run for {baseline!r}; there are {sorted(reports)}")
    base = reports[baseline]
    tables = []
    for method, report in reports.items():
        if method == baseline:
            continue
        n = min(len(report.rows), len(base.rows))
        pair = CompareReport([_first(base, n), _first(report, n)])
        for metric in metrics:
            tables.append(pair.differences(metric))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _first(report, n: int):
    """``report`` cut to its first ``n`` rows (the same facts as another run's first ``n``)."""
    import copy

    cut = copy.copy(report)
    cut.rows = list(report.rows[:n])
    return cut


#: Column headings of the wide table.
HEADINGS = {"gen_efficacy": "edit prompt said", "gen_paraphrase": "paraphrases said", "gen_question": "question form said",
            "gen_neighborhood": "neighbours keep their answer", "neighborhood_plus": "NS+ (after the statement)",
            "nkl": "NKL (nats)"}


def _cell(metric: str, difference: float, lo: float, hi: float) -> str:
    # NKL is a divergence (nats), the rest are rates (points).
    f = (lambda v: f"{v:+.3f}") if metric == "nkl" else (lambda v: f"{100 * v:+.1f}")
    return f"{f(difference)} [{f(lo)}, {f(hi)}]"


def wide(table, baseline: str) -> list[str]:
    """Markdown lines: a row per method (its facts paired), a column per measure."""
    metrics = list(dict.fromkeys(table.metric))
    lines = [f"| method − {baseline} (facts) | " + " | ".join(HEADINGS.get(m, m) for m in metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for method, part in table.groupby("method", sort=False):
        n = int(part.n.max())
        cells = []
        for m in metrics:
            r = part[part.metric == m].iloc[0]
            cells.append(_cell(m, r.difference, r.lo, r.hi) + (f" ({int(r.n)})" if int(r.n) != n else ""))
        lines.append(f"| {method} ({n}) | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="rome")
    p.add_argument("--metrics", default=",".join(METRICS))
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--wide", action="store_true")
    args = p.parse_args()
    table = differences(args.baseline, [m.strip() for m in args.metrics.split(",") if m.strip()])
    if args.wide:
        print("\n".join(wide(table, args.baseline)))
    elif args.markdown:
        print("| method − " + args.baseline + " | measure | difference [95 %] | facts |")
        print("|---|---|---|---|")
        for r in table.itertuples():
            print(f"| {r.method} | {r.metric} | {_cell(r.metric, r.difference, r.lo, r.hi)} | {r.n} |")
    else:
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
