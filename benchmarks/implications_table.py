"""The implication rates by kind of every committed run on the implication facts, as a Markdown table.

Reads ``assets/results/implications/<method>_independent.json`` (reports of
``workbench evaluate --dataset assets/knowledge/implications_gemma-3-270m.json
--include-unknown --metrics teacher --report ...``). Each method gets a row over all the
facts it ran; where one ran fewer facts (a time limit, ``--limit``), every other method
gets a row over those same facts too, so that rows side by side compare like with like.
Rates in %, 95 % bootstrap intervals over facts, the number of facts that carry the kind.

Usage::

    python benchmarks/implications_table.py            # print
    python benchmarks/implications_table.py --docs     # also write it into docs/results.md (--readme: the same)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from docs_block import write_block  # noqa: E402
sys.path.insert(0, str(ROOT))

from workbench.evaluation import bootstrap, read_report  # noqa: E402

RUNS = ROOT / "assets" / "results" / "implications"
COLUMNS = {"efficacy_score": "ES", "paraphrase_score": "PS", "neighborhood_score": "NS",
           "implication_score": "all implications", "implication_logical_generalisation_score": "logical gen.",
           "implication_compositionality_score": "compositional", "implication_multi_hop_score": "multi-hop",
           "implication_relation_specificity_score": "relation spec."}
ORDER = ("rome", "memit", "pmet", "emmet", "alphaedit", "kn", "ft", "grace", "wise", "in-context", "retrieval", "retrieval-chain")


def _cell(values) -> str:
    iv = bootstrap(values)
    if iv is None:
        return "–"
    return f"{100 * iv.mean:.1f} [{100 * iv.lo:.0f}, {100 * iv.hi:.0f}] ({iv.n})"


def _row(name: str, report, keep: set[int] | None) -> str:
    rows = [r for r in report.rows if r.after is not None and (keep is None or r.index in keep)]
    cells = []
    for key in COLUMNS:
        per_fact = dict(zip([r.index for r in report.rows], report.values(key)))
        cells.append(_cell([per_fact[r.index] for r in rows]))
    return f"| {name} | {len(rows)} | " + " | ".join(cells) + " |"


def _unedited_row(name: str, report, keep: set[int] | None) -> str:
    """The same facts before the edit (each report carries the unedited model's scores)."""
    cells = []
    for key in COLUMNS:
        per_fact = dict(zip([r.index for r in report.rows], report.values(key + "_before")))
        cells.append(_cell([v for i, v in per_fact.items() if keep is None or i in keep]))
    n = len(report.rows) if keep is None else len(keep)
    return f"| {name} | {n} | " + " | ".join(cells) + " |"


def table() -> str:
    reports = {}
    for path in sorted(RUNS.glob("*_independent.json")):
        rep = read_report(path)
        reports[rep.summary["method"]] = rep
    methods = sorted(reports, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))
    lines = ["| method | facts | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for m in methods:
        lines.append(_row(m, reports[m], None))
    done = {m: frozenset(r.index for r in reports[m].rows if r.after is not None) for m in methods}
    biggest = max(methods, key=lambda m: len(done[m]), default=None)
    if biggest is not None:
        lines.append(_unedited_row(f"unedited ({biggest}'s before)", reports[biggest], None))
    # Each smaller set of facts some method ran (a time limit): every method that covers it, on it.
    subsets = sorted({d for d in done.values() if biggest is not None and d != done[biggest]}, key=len, reverse=True)
    for subset in subsets:
        owners = [m for m in methods if done[m] == subset]
        lines.append(f"| *on the {len(subset)} facts {', '.join(owners)} ran* |" + " |" * (len(COLUMNS) + 1))
        for other in methods:
            if other not in owners and done[other] >= subset:
                lines.append(_row(f"{other}", reports[other], set(subset)))
        lines.append(_unedited_row("unedited", reports[owners[0]], set(subset)))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", "--readme", dest="docs", action="store_true")
    args = ap.parse_args(argv)
    text = table()
    print(text)
    if args.docs:
        write_block("implications", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
