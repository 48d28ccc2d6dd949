"""Draw the letter samples that ``letters_100.json`` and ``letters_100b.json`` label (run once
each; kept to show how).

``python assets/judge_labels/sample_letters.py OUT.json`` drew the first sample (seed 0, the
ROME run only, then the one complete file); ``python assets/judge_labels/sample_letters.py
OUT.json --second`` drew the second (seed 1, every other method's letters, the first sample's
letters left out); ``--missed`` drew ``letters_missed_30.json`` (seed 2: 30 letters of the weight
edits that the judge calls "neither" although they name the new object, in the rows the second
sample was drawn from, neither sample's letters included). The labels and reasons were then added by hand, by reading, without the
judge's verdict in view.

Each letter falls in a cell (side: before/after, the judge's verdict then); a fixed
number is drawn from each cell with ``random.Random(seed)``, cells in a fixed order, and the
drawn letters of a cell alternate between the "mend" half and the "holdout" half.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LETTERS = ROOT / "assets" / "results" / "letters"
#: The first sample's cells.
QUOTA = {("after", "new"): 25, ("after", "true"): 15, ("after", "both"): 12, ("after", "neither"): 16,
         ("before", "new"): 1, ("before", "both"): 0, ("before", "true"): 15, ("before", "neither"): 16}

#: The second sample's: the "after" cells of every method but ROME, and a few unedited letters
#: (the same for every method of a fact, so drawn once each).
QUOTA_B = {("after", "new"): 30, ("after", "true"): 15, ("after", "both"): 12, ("after", "neither"): 23,
           ("before", "true"): 10, ("before", "neither"): 10}


def letters(files):
    for path in files:
        for i, row in enumerate(json.loads(path.read_text())["rows"]):
            for side in ("before", "after"):
                for k, x in enumerate((row.get(side) or {}).get("letters") or []):
                    yield {"source": str(path.relative_to(ROOT)), "row": i, "side": side, "letter": k,
                           "subject": row["subject"], "relation": row["prompt"], "target_true": row["target_true"],
                           "target_new": row["target_new"], "prompt": x["prompt"], "text": x["text"],
                           "judge_at_sampling": x["verdict"]}


def sample(files, *, seed: int = 0, quota: dict = QUOTA, exclude=()):
    """The drawn letters (each with its cell, cell size and half) and every cell's size.

    ``exclude``: letters already labelled (dicts with ``subject`` and ``text``) are not drawn,
    nor is a second copy of a text (the unedited model writes the same letters for every method).
    """
    rng = random.Random(seed)
    seen = {(x["subject"], x["text"]) for x in exclude}
    pool = []
    for x in letters(files):
        if (x["subject"], x["text"]) not in seen:
            seen.add((x["subject"], x["text"]))
            pool.append(x)
    cells = {c: [x for x in pool if (x["side"], x["judge_at_sampling"]) == c] for c in quota}
    out = []
    for cell, n in quota.items():
        drawn = rng.sample(cells[cell], min(n, len(cells[cell])))
        for j, x in enumerate(drawn):
            out.append({**x, "cell_size": len(cells[cell]), "cell_drawn": len(drawn),
                        "half": "mend" if j % 2 == 0 else "holdout"})
    return out, {f"{s}/{v}": len(xs) for (s, v), xs in cells.items()}


def sample_missed(n: int = 30, seed: int = 2):
    """Letters after a weight edit that name the new object but that the judge calls "neither"."""
    from workbench.evaluation.judge import mentions

    here = ROOT / "assets" / "judge_labels"
    second = json.loads((here / "letters_100b.json").read_text())
    labelled = json.loads((here / "letters_100.json").read_text())["items"] + second["items"]
    seen = {(x["subject"], x["text"]) for x in labelled}
    pool = []
    for src, n_rows in second["rows_at_sampling"].items():
        if any(m in src for m in ("in-context_", "retrieval_")):
            continue
        for x in letters([ROOT / src]):
            if (x["row"] < n_rows and x["side"] == "after" and x["judge_at_sampling"] == "neither"
                    and mentions(x["text"], x["target_new"]) and (x["subject"], x["text"]) not in seen):
                seen.add((x["subject"], x["text"]))
                pool.append(x)
    drawn = random.Random(seed).sample(pool, min(n, len(pool)))
    return [{**x, "cell_size": len(pool), "cell_drawn": len(drawn)} for x in drawn], {"after/neither, names new": len(pool)}


if __name__ == "__main__":
    if "--missed" in sys.argv:
        files = sorted(LETTERS.glob("*.json"))
        items, sizes = sample_missed()
    elif "--second" in sys.argv:
        files = sorted(f for f in LETTERS.glob("*.json") if not f.name.startswith("rome_"))
        first = json.loads((ROOT / "assets" / "judge_labels" / "letters_100.json").read_text())["items"]
        items, sizes = sample(files, seed=1, quota=QUOTA_B, exclude=first)
    else:
        files = sorted(LETTERS.glob("*.json"))
        items, sizes = sample(files)
    print(json.dumps({"files": [str(f.relative_to(ROOT)) for f in files], "cells": sizes, "n": len(items)}))
    if len(sys.argv) > 1 and not sys.argv[1].startswith("--"):
        Path(sys.argv[1]).write_text(json.dumps(items, indent=1))
