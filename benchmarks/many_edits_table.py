"""The resumable many-edits runs (issue 44) as Markdown tables: every curve point of each, and
the AlphaEdit ablation at 300 edits.

Reads ``assets/results/sequential_1k/<run>.json`` (``benchmarks/sequential_curves.py``) for the
runs named in :data:`RUNS`, and for the ablation (``benchmarks/alphaedit_ablation.sh``) the point
at 300 edits of :data:`ABLATION`'s runs; a run that is not there yet is left out. Rates in %;
intermediate points score a fixed sample of the facts edited so far (``n scored``).

Usage::

    python benchmarks/many_edits_table.py            # print
    python benchmarks/many_edits_table.py --docs     # also write them into docs/results.md
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
        "ablation/alphaedit-paper_b100_ablation-window-3-7": "AlphaEdit as published on layers 3-7, batches of 100",
        "memit_b100": "MEMIT, batches of 100",
        "memit-kept_b100": "MEMIT + kept keys, batches of 100",
        "emmet_b100": "EMMET, batches of 100",
        "rome": "ROME, one fact a call (teacher-forced and generated)",
        "wise-paper": "WISE as published, one fact a call",
        "wise-paper_mean-scores": "WISE as published, every input scored by its mean (long_input=0)"}
#: The ablation's runs at 300 edits (batches of 100): file stem under sequential_1k/ -> what differs.
ABLATION = {"alphaedit-paper_b100": "AlphaEdit as published (cut 2e-2, C over 100,000 tokens with BOS, L2 = 10, layers 2-6)",
            "ablation/alphaedit-paper_b100_ablation-cut-1e-3": "cut 1e-3",
            "ablation/alphaedit-paper_b100_ablation-samples-20k": "C over 20,000 tokens",
            "ablation/alphaedit-paper_b100_ablation-no-bos": "BOS left out of C",
            "ablation/alphaedit-paper_b100_ablation-l2-1": "L2 = 1",
            "ablation/alphaedit-paper_b100_ablation-window-memit": "MEMIT's window (layers 0-4)",
            "ablation/alphaedit-paper_b100_ablation-window-3-7": "one layer later (layers 3-7)",
            "memit_b100": "MEMIT (no projection)",
            "memit-kept_b100": "MEMIT + kept keys (no projection)",
            # The same two commands' first runs, on another CPU: how far rounding alone moves a point.
            "epyc/alphaedit-paper_b100": "AlphaEdit as published, the same command on the AMD EPYC",
            "epyc/memit_b100": "MEMIT, the same command on the AMD EPYC"}
AT = 300


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


def ablation() -> str:
    """One row a run: its curve point at :data:`AT` edits and its perplexity there against unedited."""
    lines = [f"| run at {AT} edits | n scored | ES | PS | NS | perplexity (unedited) | fluency |",
             "|---|---|---|---|---|---|---|"]
    for stem, label in ABLATION.items():
        path = CURVES / f"{stem}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        curve = data["curve"]
        point = next((p for p in curve if p["n_edits"] == AT), None)
        if point is None:
            lines.append(f"| {label} | not yet at {AT} (reached {curve[-1]['n_edits']}) | | | | | |")
            continue
        errors = [r.get("error") for r in data["rows"]]
        if errors and all(errors):
            # A setting the editor refuses (AlphaEdit's cut leaving no free direction): say why.
            lines.append(f"| {label} | every edit refused: {errors[0].split(';')[0]} | | | | | |")
            continue
        lines.append(f"| {label} | {point.get('n_scored') or '–'} | {_pct(point['efficacy_score'])} | "
                     f"{_pct(point['paraphrase_score'])} | {_pct(point['neighborhood_score'])} | "
                     f"{point['perplexity']:.1f} ({curve[0]['perplexity']:.1f}) | {point['fluency']:.2f} |")
    return "\n".join(lines) + "\n\nCommand: `benchmarks/alphaedit_ablation.sh` (resumable)."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", action="store_true")
    args = ap.parse_args(argv)
    text, ablated = table(), ablation()
    print(text, ablated, sep="\n\n")
    if args.docs:
        write_block("many-edits-resumable", text)
        write_block("alphaedit-ablation", ablated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
