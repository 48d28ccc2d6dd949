"""The resumable many-edits runs (issue 44) as one Markdown table: every curve point of each.

Reads ``assets/results/sequential_1k/<run>.json`` (``benchmarks/sequential_curves.py``) for the
runs named in :data:`RUNS`; a run that is not there yet is left out. Rates in %; intermediate
points score a fixed sample of the facts edited so far (``n scored``).

Usage::

    python benchmarks/many_edits_table.py            # print
    python benchmarks/many_edits_table.py --docs     # also write it into docs/results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from docs_block import write_block  # noqa: E402
CURVES = ROOT / "assets" / "results" / "sequential_1k"
RUNS = {"alphaedit-paper_b100": "AlphaEdit as published, batches of 100",
        "memit_b100": "MEMIT, batches of 100",
        "wise-paper": "WISE as published, one fact a call"}


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table() -> str:
    lines = ["| run | edits | n scored | ES | PS | NS | perplexity | fluency |", "|---|---|---|---|---|---|---|---|"]
    for stem, label in RUNS.items():
        path = CURVES / f"{stem}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for p in data["curve"]:
            lines.append(f"| {label} | {p['n_edits']} | {p.get('n_scored') or '–'} | {_pct(p['efficacy_score'])} | "
                         f"{_pct(p['paraphrase_score'])} | {_pct(p['neighborhood_score'])} | "
                         f"{p['perplexity']:.1f} | {p['fluency']:.2f} |")
    commands = [json.loads((CURVES / f"{s}.json").read_text())["meta"]["command"] for s in RUNS
                if (CURVES / f"{s}.json").exists()]
    return "\n".join(lines) + "\n\nCommands: " + "; ".join(f"`{c}`" for c in commands) + "."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", action="store_true")
    args = ap.parse_args(argv)
    text = table()
    print(text)
    if args.docs:
        write_block("many-edits-resumable", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
