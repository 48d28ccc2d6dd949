"""Is the letter test's "before" column biased by how it is batched? The unedited model's
related-entity letters on the lesson's ten facts, sampled one fact a call (as an evaluation's
"after" side) and in one batch of all ten (as its "before" side), per seed: how many of the 60
letters about the true object name the subject.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/letters_batch_noise.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)

    import workbench as wb
    from workbench.evaluation.generated import related_letters
    from workbench.facts import read_facts

    model = wb.load_model()
    facts = read_facts(ROOT / "assets" / "results" / "related" / "lesson_facts.json")

    def named(rows) -> int:
        return sum(x["mentions_subject"] for r in rows for x in r if x["about"] == "true")

    for seed in args.seeds:
        one = named([related_letters(model, [f], seed=seed)[0] for f in facts])
        batch = named(related_letters(model, facts, seed=seed))
        print(f"seed {seed}: one fact a call {one}/60, one batch {batch}/60", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
