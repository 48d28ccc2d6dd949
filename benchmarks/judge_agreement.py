"""How far the letter judge agrees with a reader, and what that does to the letter rates (issue 39).

    python benchmarks/judge_agreement.py [--json OUT]

For each labelled sample in ``assets/judge_labels/`` (``letters_100.json``: ROME's letters;
``letters_100b.json``: every other method's; ``letters_missed_30.json``: the weight edits'
letters the judge calls "neither" that name the new object), prints the judge's agreement with the labels
(all four verdicts), its precision and recall for "the letter asserts the new object" (a
verdict of new or both), and the confusions. Then, per sample and for weight edits and the
memories (in-context, retrieval) apart, the share of the edited model's letters that assert
the new object two ways: as the judge counts it, and as a reader would, estimated from the
sample (each cell, side x the judge's verdict when it was drawn, weighted by its size then;
"neither" split by whether the letter names the new object at all; 95 % interval from each
cell's Beta(k + 1/2, n - k + 1/2)).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.evaluation.judge import letter_verdict, mentions  # noqa: E402

LABELS = ROOT / "assets" / "judge_labels"
SAMPLES = ("letters_100.json", "letters_100b.json")
#: Letters of the weight edits' "neither" cell that name the new object, drawn apart (see its "about").
MISSED = "letters_missed_30.json"
#: Every letter whose verdict the repetition rule changed, labelled (see its "about").
RUNS = "letters_runs_66.json"
MEMORIES = ("in-context", "retrieval")
NEW = ("new", "both")


def verdict(x: dict, *, subject: bool = True) -> str:
    """Today's judge on a labelled letter (``subject=False``: without the subject's name and cues)."""
    return letter_verdict(x["text"], new=x["target_new"], true=x["target_true"],
                          subject=x["subject"] if subject else None)


def agreement(items: list[dict], *, subject: bool = True, stored: bool = False) -> dict:
    """Agreement of today's judge with the labels, and its precision/recall for "new"
    (``stored``: of the verdicts the items record from before the repetition rule instead)."""
    said = [(x["verdict_before_mend"] if stored else verdict(x, subject=subject), x["label"]) for x in items]
    tp = sum(v in NEW and lab in NEW for v, lab in said)
    fp = sum(v in NEW and lab not in NEW for v, lab in said)
    fn = sum(v not in NEW and lab in NEW for v, lab in said)
    return {"n": len(said), "agree": sum(v == lab for v, lab in said), "tp": tp, "fp": fp, "fn": fn,
            "precision_new": tp / (tp + fp) if tp + fp else None, "recall_new": tp / (tp + fn) if tp + fn else None,
            "confusions": dict(Counter(f"{v}->{lab}" for v, lab in said if v != lab).most_common())}


def method_of(source: str) -> str:
    return Path(source).name.removesuffix("_independent.json")


def cell_of(side: str, verdict: str, text: str, new: str) -> str:
    """The cell a letter is weighted in: side and verdict, and for "neither" whether the letter names
    the new object at all (one that does not cannot be read as asserting it)."""
    if verdict != "neither":
        return f"{side}/{verdict}"
    return f"{side}/neither, " + ("names new" if mentions(text, new) else "new not named")


def cell_sizes(rows_at_sampling: dict[str, int], keep) -> Counter:
    """Letters per cell (:func:`cell_of`, with the verdict the judge gave when the sample was drawn)
    in the rows each file had then, over the files whose method passes ``keep``. The files hold
    today's verdicts; the letters the repetition rule re-judged since (:data:`RUNS`, all of
    them) are put back in the cell of their verdict before it."""
    before_mend = {(x["subject"], x["text"]): x["verdict_before_mend"]
                   for x in json.loads((LABELS / RUNS).read_text())["items"]}
    sizes = Counter()
    for src, n_rows in rows_at_sampling.items():
        if not keep(method_of(src)):
            continue
        for row in json.loads((ROOT / src).read_text())["rows"][:n_rows]:
            for side in ("before", "after"):
                for x in (row.get(side) or {}).get("letters") or []:
                    verdict = before_mend.get((row["subject"], x["text"]), x["verdict"])
                    sizes[cell_of(side, verdict, x["text"], row["target_new"])] += 1
    return sizes


def estimate(items: list[dict], sizes: dict[str, int], *, unnamed: tuple[str, ...] = (), side: str = "after",
             draws: int = 4000, seed: int = 0) -> dict:
    """The share of ``side`` letters that assert the new object, as the judge counts it and as a
    reader would: each sampling cell's labelled share weighted by the cell's size (``sizes``:
    "side/verdict at sampling" -> letters). Interval: each cell's share drawn from
    Beta(k + 1/2, n - k + 1/2), so that a cell where no sampled letter was "new" still counts
    as uncertain -- except the ``unnamed`` cells, whose letters never name the new object: a
    reader's label needs it named (none of the sampled ones was labelled new), so they count 0."""
    cells = defaultdict(list)
    for x in items:
        if x["side"] == side:
            split = cell_of(side, x["judge_at_sampling"], x["text"], x["target_new"])
            cells[split if split in sizes else f"{side}/{x['judge_at_sampling']}"].append(x)
    total = sum(n for c, n in sizes.items() if c.startswith(f"{side}/"))
    missing = sorted(c for c, n in sizes.items() if c.startswith(f"{side}/") and n and c not in cells)
    if not total or missing:
        return {"letters": total, "cells_not_sampled": missing}

    def share(says) -> float:
        return sum(sizes[c] * sum(map(says, xs)) / len(xs) for c, xs in cells.items()) / total

    rng = random.Random(seed)
    k_n = {c: (sum(x["label"] in NEW for x in xs), len(xs)) for c, xs in cells.items()}
    boot = sorted(sum(sizes[c] * (0.0 if c in unnamed else rng.betavariate(k + 0.5, n - k + 0.5))
                      for c, (k, n) in k_n.items()) / total for _ in range(draws))
    return {"letters": total, "judge_new": share(lambda x: verdict(x) in NEW),
            "reader_new": share(lambda x: x["label"] in NEW),
            "reader_lo": boot[int(0.025 * draws)], "reader_hi": boot[int(0.975 * draws) - 1],
            "cells": {c: {"letters": sizes[c], "labelled": n, "labelled_new": k} for c, (k, n) in k_n.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    out = {}
    for name in SAMPLES:
        doc = json.loads((LABELS / name).read_text())
        items = doc["items"]
        res = {"all": agreement(items)}
        for half in ("mend", "holdout"):
            res[half] = agreement([x for x in items if x["half"] == half])
        groups = {"weight edits": lambda m: m not in MEMORIES, "memories": lambda m: m in MEMORIES}
        for label, keep in groups.items():
            mine = [x for x in items if keep(method_of(x["source"]))]
            if not mine:
                continue
            res[label] = agreement(mine)
            # Each cell's size for this group: counted in the rows the files had at sampling (the
            # second sample's cells are today's verdicts), or as recorded (the first sample: one
            # method, cells of the mention-only judge it was drawn by).
            if "rows_at_sampling" in doc:
                sizes = cell_sizes(doc["rows_at_sampling"], keep)
                if label == "weight edits":
                    missed = json.loads((LABELS / MISSED).read_text())["items"]
                    res["weight edits, 'neither' that names new"] = agreement(missed)
                    mine = mine + missed
                unnamed = ("after/neither, new not named",)
            else:
                sizes = {c: v["letters"] for c, v in doc["cells"].items()}
                unnamed = ("after/neither",)  # the mention-only judge's "neither": nothing named
            res[f"{label}: letters after the edit"] = estimate(mine, sizes, unnamed=unnamed)
        out[name] = res
        print(f"\n{name}")
        for key, r in res.items():
            if "agree" in r:
                prec = "-" if r["precision_new"] is None else f"{r['precision_new']:.2f}"
                rec = "-" if r["recall_new"] is None else f"{r['recall_new']:.2f}"
                print(f"  {key:14s} agree {r['agree']}/{r['n']}; 'new': precision {prec}, recall {rec} "
                      f"(tp {r['tp']}, fp {r['fp']}, fn {r['fn']}); confusions (judge->reader) {r['confusions']}")
            elif "reader_new" in r:
                print(f"  {key}: {r['letters']} letters; the judge says new in {100 * r['judge_new']:.1f} %, "
                      f"a reader would in {100 * r['reader_new']:.1f} % [{100 * r['reader_lo']:.1f}, "
                      f"{100 * r['reader_hi']:.1f}]; cells {r['cells']}")
            else:
                print(f"  {key}: cannot weight back, cells not sampled: {r['cells_not_sampled']}")
    runs = json.loads((LABELS / RUNS).read_text())["items"]
    out[RUNS] = {"today": agreement(runs),
                 "before the repetition rule": agreement(runs, stored=True)}
    print(f"\n{RUNS} (where the repetition rule acts; in-sample)")
    for key, r in out[RUNS].items():
        print(f"  {key:27s} agree {r['agree']}/{r['n']}; 'new': tp {r['tp']}, fp {r['fp']}, fn {r['fn']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
