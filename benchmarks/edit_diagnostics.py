"""Each batch's edit diagnostics from committed sequential runs, as markdown tables.

AlphaEdit's editors record, per batch and edited layer, ‖ΔW‖/‖W‖ (``update_norm_ratio``), the
share of held-out text's key energy its free directions carry (``heldout_leakage``) and how far
the update moves the output at the BOS position (``bos_output_change``); a sequential run keeps
them in each curve point (``curve[i].edit_diagnostics``, the batch that ended at that point).
This prints one table per measure: a row per batch, a column per layer, for one run or several
side by side (their layers differ, so each keeps its own columns).

Usage::

    python benchmarks/edit_diagnostics.py alphaedit-paper_b100 ablation/alphaedit-paper_b100_ablation-window-3-7
    python benchmarks/edit_diagnostics.py alphaedit-paper_b100 --measure update_norm_ratio
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CURVES = ROOT / "assets" / "results" / "sequential_1k"
MEASURES = {"update_norm_ratio": "‖ΔW‖/‖W‖ of the batch's update",
            "heldout_leakage": "held-out key energy in the free directions, tr(P C_h)/tr(C_h)",
            "bos_output_change": "‖ΔW k_BOS‖, the batch's change of the output at BOS"}


def batches(run: str) -> list[tuple[int, dict[int, dict]]]:
    """``[(edits at the point, {layer: diagnostics})]`` for every point that recorded them.

    Example:
        >>> batches("alphaedit-paper_b100")[0][0]        # doctest: +SKIP
        100
    """
    path = CURVES / f"{run}.json"
    if not path.exists():
        raise SystemExit(f"no run {run!r}: expected {path.relative_to(ROOT)}")
    out = []
    for point in json.loads(path.read_text())["curve"]:
        diag = (point.get("edit_diagnostics") or {}).get("diagnostics")
        if diag:
            out.append((point["n_edits"], {int(layer): values for layer, values in diag.items()}))
    return out


def table(runs: list[str], measure: str) -> str:
    """One markdown table of ``measure``: a row per curve point, a column per run and layer."""
    per_run = {run: dict(batches(run)) for run in runs}  # run -> {edits: {layer: diagnostics}}
    columns = [(run, layer) for run in runs for layer in sorted({l for d in per_run[run].values() for l in d})]
    points = sorted({n for run in runs for n in per_run[run]})
    tag = {run: chr(ord("A") + i) for i, run in enumerate(runs)}
    head = "| edits | " + " | ".join(f"{tag[r]} L{l}" if len(runs) > 1 else f"L{l}" for r, l in columns) + " |"
    legend = "; ".join(f"{tag[r]}: {r}" for r in runs) if len(runs) > 1 else runs[0]
    lines = [f"{MEASURES[measure]} ({legend}):", "", head, "|---" * (len(columns) + 1) + "|"]
    for n in points:
        cells = []
        for run, layer in columns:
            d = per_run[run].get(n, {}).get(layer, {})
            cells.append("–" if measure not in d else f"{d[measure]:.3f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="file stems under assets/results/sequential_1k/ (ablation/... for the ablation)")
    ap.add_argument("--measure", choices=sorted(MEASURES), action="append",
                    help="one of the measures (repeatable; default: all three)")
    args = ap.parse_args(argv)
    for measure in args.measure or list(MEASURES):
        print(table(args.runs, measure), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
