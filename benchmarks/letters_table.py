"""The letter test of every committed run, as Markdown tables: by method, by subject kind, and
paired against the two baselines that change no weights.

Reads ``assets/results/letters/<method>_independent.json`` (``benchmarks/letters.sh``). A fact's
score is the share of its six letters (three prompts, two samples) that assert the new object
(``letter_new`` + ``letter_both``) or the old one (``letter_true`` + ``letter_both``), as judged
by :func:`workbench.evaluation.judge.letter_verdict`. Intervals: 95 % percentile bootstrap over
facts (2,000 samples, seed 0). Runs stop at a time limit, so they cover different first-n facts;
every comparison here is on the facts both runs share, and says how many.

The subject kind (place, person, thing) is the one the letter prompts were written for: the
relation's subject kind in ``assets/relations.json`` (:func:`workbench.evaluation.relations.letter_prompts`).

Usage::

    python benchmarks/letters_table.py            # print
    python benchmarks/letters_table.py --docs     # also write it into docs/results.md
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
from workbench.evaluation.intervals import paired_difference  # noqa: E402
from workbench.evaluation.letters import letter_rows, letter_shares, row_kind  # noqa: E402

RUNS = ROOT / "assets" / "results" / "letters"
ORDER = ("rome", "memit", "pmet", "emmet", "alphaedit", "alphaedit-paper", "kn", "ft", "grace", "wise", "wise-paper",
         "in-context", "retrieval", "retrieval-chain")
BASELINES = ("in-context", "retrieval")
KINDS = ("place", "person", "thing")


def runs() -> dict[str, dict[int, object]]:
    """Every committed letters run: method -> {fact index: row} (rows with letters after the edit)."""
    out = {}
    for path in sorted(RUNS.glob("*_independent.json")):
        method = path.name.removesuffix("_independent.json")
        report = read_report(path)
        out[method] = {r.index: r for r in letter_rows(report)}
    return dict(sorted(out.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))


def _cell(values) -> str:
    iv = bootstrap(values)
    return "–" if iv is None else f"{100 * iv.mean:.1f} [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]"


def _diff(values_a, values_b) -> str:
    iv = paired_difference(values_a, values_b)
    return "–" if iv is None else f"{100 * iv.mean:+.1f} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}] ({iv.n})"


def by_method(all_runs) -> str:
    """One row per run over its own facts, and the unedited model over all of them."""
    lines = ["| run | facts | letters asserting the new object, % | the old object, % |", "|---|---|---|---|"]
    before = {i: r for rows in all_runs.values() for i, r in rows.items() if letter_shares(r.before)[0] is not None}
    lines.append(f"| unedited model | {len(before)} | {_cell(letter_shares(r.before)[0] for r in before.values())} | "
                 f"{_cell(letter_shares(r.before)[1] for r in before.values())} |")
    for method, rows in all_runs.items():
        lines.append(f"| {method} | {len(rows)} | {_cell(letter_shares(r.after)[0] for r in rows.values())} | "
                     f"{_cell(letter_shares(r.after)[1] for r in rows.values())} |")
    return "\n".join(lines)


def by_kind(all_runs) -> str:
    """New object asserted, % [interval] (facts), per run and subject kind."""
    lines = ["| run | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    # The ceiling: how often the unedited model's letters state the true object at all.
    before = {i: r for rows in all_runs.values() for i, r in rows.items() if letter_shares(r.before)[0] is not None}
    cells = []
    for kind in KINDS:
        vals = [letter_shares(r.before)[1] for r in before.values() if row_kind(r) == kind]
        cells.append(f"{_cell(vals)} ({len(vals)})" if vals else "–")
    lines.append("| unedited model, asserting the old object | " + " | ".join(cells) + " |")
    for method, rows in all_runs.items():
        cells = []
        for kind in KINDS:
            vals = [letter_shares(r.after)[0] for r in rows.values() if row_kind(r) == kind]
            cells.append(f"{_cell(vals)} ({len(vals)})" if vals else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(all_runs) -> str:
    """Each weight edit minus each baseline, new object asserted, points, on the facts both ran."""
    bases = [b for b in BASELINES if b in all_runs]
    lines = ["| run | " + " | ".join(f"minus {b}, points (facts)" for b in bases) + " |", "|---|" + "---|" * len(bases)]
    for method, rows in all_runs.items():
        if method in bases:
            continue
        cells = []
        for b in bases:
            common = sorted(set(rows) & set(all_runs[b]))
            cells.append(_diff([letter_shares(rows[i].after)[0] for i in common],
                               [letter_shares(all_runs[b][i].after)[0] for i in common]) if common else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RELATED = ROOT / "assets" / "results" / "related"


def related_table() -> str | None:
    """The related-entity letter (``--metrics related``; ``benchmarks/related_letters.sh``): shares
    of letters about the new object, and about the true one, that name the subject, before and
    after the edit (None when no run is committed)."""
    lines = ["| run | facts | about the new object: before | after | about the true object: before | after |",
             "|---|---|---|---|---|---|"]
    found = False
    for path in sorted(RELATED.glob("*.json"), key=lambda p: ORDER.index(p.stem) if p.stem in ORDER else len(ORDER)):
        if path.name == "lesson_facts.json":
            continue
        rows = [r for r in read_report(path).rows if r.error is None and r.after and r.after.get("related_new") is not None]
        if not rows:
            continue
        found = True
        cells = [_cell(_side(r, side, key) for r in rows)
                 for key in ("related_new", "related_true") for side in ("before", "after")]
        lines.append(f"| {path.stem} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if found else None


def _side(row, side: str, key: str):
    return (getattr(row, side) or {}).get(key)


def table() -> str:
    all_runs = runs()
    return "\n\n".join([
        "Letters asserting each object, by run (% of letters, mean over facts; 95 % interval):", by_method(all_runs),
        "Letters asserting the new object after the edit, by the subject's kind (% [interval] (facts)); the "
        "first row is the ceiling, how often the unedited model's letters assert the old object:",
        by_kind(all_runs),
        "Paired by fact, letters asserting the new object: the run minus a baseline that changes no weights:",
        paired(all_runs),
        *(["The related-entity letter: % of letters about each object that name the subject (the lesson's ten "
           "facts, `benchmarks/related_letters.sh`):", related] if (related := related_table()) else []),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/results.md")
    args = parser.parse_args(argv)
    text = table()
    print(text)
    if args.docs:
        write_block("letters", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
