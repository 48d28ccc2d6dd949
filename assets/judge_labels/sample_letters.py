"""Draw the letter sample that ``letters_100.json`` labels (run once; kept to show how).

``python assets/judge_labels/sample_letters.py OUT.json`` writes the drawn letters; the
labels and reasons in ``letters_100.json`` were then added by hand, by reading.

Letters come from every complete file in ``assets/results/letters/`` at sampling time.
Each letter falls in a cell (side: before/after, the judge's verdict then); a fixed
number is drawn from each cell with ``random.Random(0)``, cells in a fixed order, and the
drawn letters of a cell alternate between the "mend" half and the "holdout" half.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LETTERS = ROOT / "assets" / "results" / "letters"
QUOTA = {("after", "new"): 25, ("after", "true"): 15, ("after", "both"): 12, ("after", "neither"): 16,
         ("before", "new"): 1, ("before", "both"): 0, ("before", "true"): 15, ("before", "neither"): 16}


def letters(files):
    for path in files:
        for i, row in enumerate(json.loads(path.read_text())["rows"]):
            for side in ("before", "after"):
                for k, x in enumerate((row.get(side) or {}).get("letters") or []):
                    yield {"source": str(path.relative_to(ROOT)), "row": i, "side": side, "letter": k,
                           "subject": row["subject"], "relation": row["prompt"], "target_true": row["target_true"],
                           "target_new": row["target_new"], "prompt": x["prompt"], "text": x["text"],
                           "judge_at_sampling": x["verdict"]}


def sample(files):
    rng = random.Random(0)
    pool = list(letters(files))
    cells = {c: [x for x in pool if (x["side"], x["judge_at_sampling"]) == c] for c in QUOTA}
    out = []
    for cell, n in QUOTA.items():
        drawn = rng.sample(cells[cell], min(n, len(cells[cell])))
        for j, x in enumerate(drawn):
            out.append({**x, "cell_size": len(cells[cell]), "cell_drawn": len(drawn),
                        "half": "mend" if j % 2 == 0 else "holdout"})
    return out, {f"{s}/{v}": len(xs) for (s, v), xs in cells.items()}


if __name__ == "__main__":
    files = sorted(LETTERS.glob("*.json"))
    items, sizes = sample(files)
    print(json.dumps({"files": [str(f.relative_to(ROOT)) for f in files], "cells": sizes, "n": len(items)}))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(items, indent=1))
