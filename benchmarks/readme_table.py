"""The README's headline table, from the committed runs: implications and letters, one row a method.

Columns ES, PS, NS, all implications, multi-hop and other relations kept come from
``assets/results/implications/<method>_independent.json``, on the facts every listed method's run
reached (so that the rows compare like with like; ``benchmarks/implications_table.py`` has each
run on all of its facts); the letters column from
``assets/results/letters/<method>_independent.json`` (``benchmarks/letters.sh``): the share of
a fact's letters that assert the new object, mean over the facts the run reached (their number
in brackets); the many-edits column from ``assets/results/sequential_1k/`` (the run named in
:data:`SEQUENTIAL`, ``benchmarks/sequential_curves.py``): ES / PS / NS at the run's last point,
its held-out perplexity as a multiple of the unedited model's, and the edits reached. The unedited
row: the same implication facts before the edits, the unedited letters of every letters run's
facts, and the sequential runs' point at 0 edits. Rates in %, 95 % bootstrap intervals over facts.

Usage::

    python benchmarks/readme_table.py            # print
    python benchmarks/readme_table.py --readme   # also replace the table in README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import letters_table  # noqa: E402
sys.path.insert(0, str(ROOT))

from workbench.evaluation import bootstrap, read_report  # noqa: E402
from workbench.evaluation.letters import letter_shares  # noqa: E402

README = ROOT / "README.md"
IMPLICATIONS = ROOT / "assets" / "results" / "implications"
ORDER = ("rome", "memit", "pmet", "emmet", "alphaedit", "kn", "ft", "grace", "wise", "in-context", "retrieval")
COLUMNS = {"efficacy_score": "ES", "paraphrase_score": "PS", "neighborhood_score": "NS",
           "implication_score": "all implications", "implication_multi_hop_score": "multi-hop",
           "implication_relation_specificity_score": "other relations kept"}
LETTERS = "letters name the new object (facts)"
CURVES = ROOT / "assets" / "results" / "sequential_1k"
#: The sequential run behind each row's many-edits cell: the method's own file, or for AlphaEdit the
#: published recipe (the one the 1,000-edit curves run); batches of 100 where the file says ``_b100``.
SEQUENTIAL = {"rome": "rome", "memit": "memit_b100", "emmet": "emmet_b100", "alphaedit": "alphaedit-paper_b100",
              "ft": "ft", "grace": "grace", "wise": "wise", "retrieval": "retrieval"}
MANY = "sequential edits: ES / PS / NS, perplexity × unedited (edits)"
HEADER = "| method | " + " | ".join(COLUMNS.values()) + f" | {LETTERS} | {MANY} |"


def _bound(x: float) -> str:
    # Whole points read best in a wide table; below one point a decimal keeps "0.4" from reading as 0.
    return f"{x:.0f}" if x == 0 or abs(x) >= 1 else f"{x:.1f}"


def _cell(values, facts: bool = False) -> str:
    iv = bootstrap(list(values))
    if iv is None:
        return "–"
    text = f"{100 * iv.mean:.1f} [{_bound(100 * iv.lo)}, {_bound(100 * iv.hi)}]"
    return f"{text} ({iv.n})" if facts else text


def _sequential_cell(method: str | None) -> str:
    """ES / PS / NS at the run's last point (or, for ``None``, the unedited point of any run)."""
    paths = [CURVES / f"{SEQUENTIAL[method]}.json"] if method in SEQUENTIAL else []
    if method is None:
        paths = [CURVES / f"{stem}.json" for stem in SEQUENTIAL.values()]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return "–"
    curve = json.loads(paths[0].read_text(encoding="utf-8"))["curve"]
    point = curve[0] if method is None else curve[-1]
    if point["n_edits"] == 0 and method is not None:
        return "–"
    rates = " / ".join(f"{100 * point[k]:.0f}" for k in ("efficacy_score", "paraphrase_score", "neighborhood_score"))
    batch = "; batches of 100" if "_b100" in paths[0].stem and method is not None else ""
    return f"{rates}, ×{point['perplexity'] / curve[0]['perplexity']:.1f} ({point['n_edits']}{batch})"


def _implication_cells(report, side: str, facts: set[int]) -> list[str]:
    cells = []
    for key in COLUMNS:
        per_fact = dict(zip([r.index for r in report.rows], report.values(key if side == "after" else key + "_before")))
        cells.append(_cell(per_fact[i] for i in sorted(facts)))
    return cells


def table() -> str:
    """The table's Markdown, header included."""
    reports = {}
    for path in sorted(IMPLICATIONS.glob("*_independent.json")):
        rep = read_report(path)
        if rep.summary["method"] in ORDER:
            reports[rep.summary["method"]] = rep
    letters = letters_table.runs()
    methods = [m for m in ORDER if m in reports]
    lines = [HEADER, "|---" * (len(COLUMNS) + 3) + "|"]
    if not methods:
        return "\n".join(lines)
    common = set.intersection(*({r.index for r in reports[m].rows if r.after is not None} for m in methods))
    for m in methods:
        letter = _cell((letter_shares(r.after)[0] for r in letters[m].values()), facts=True) if m in letters else "–"
        lines.append(f"| {m} | " + " | ".join(_implication_cells(reports[m], "after", common)) + f" | {letter} | {_sequential_cell(m)} |")
    before = {i: r for rows in letters.values() for i, r in rows.items() if letter_shares(r.before)[0] is not None}
    letter = _cell((letter_shares(r.before)[0] for r in before.values()), facts=True)
    lines.append("| unedited | " + " | ".join(_implication_cells(reports[methods[0]], "before", common))
                 + f" | {letter} | {_sequential_cell(None)} |")
    return "\n".join(lines)


def write_readme(text: str, path: Path = README) -> None:
    """Replace the table that starts at :data:`HEADER` in ``path`` with ``text``."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if HEADER not in lines:
        raise SystemExit(f"{path.name} has no line {HEADER!r}")
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    path.write_text("\n".join(lines[:start] + text.split("\n") + lines[end:]), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", action="store_true", help="replace the table in README.md")
    args = ap.parse_args(argv)
    text = table()
    print(text)
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
