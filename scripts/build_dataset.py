"""Build the bundled datasets in assets/ from the offline data in assets/data/.

Keeps the facts the default model gets right (its top-1 next token begins the
true object, ROME's criterion) and writes them in the workbench format:

- assets/known_facts.json: CounterFact edit records (EasyEdit flat format source)
- assets/known_trace_facts.json: ROME's known_1000 facts, for causal tracing

Run: .venv/bin/python scripts/build_dataset.py [--model gemma-3-270m]
Prints the counts recorded in the README.
"""

from __future__ import annotations

import argparse
import json

import workbench as wb
from workbench.facts import ASSETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()
    model = wb.load_model(args.model)
    counts = {}
    for source, target in [
        ("counterfact-edit-1k.json", "known_facts.json"),
        ("known_1000.json", "known_trace_facts.json"),
    ]:
        facts = wb.read_facts(ASSETS / "data" / source)
        kept = wb.filter_known(model, facts)
        wb.write_facts(kept, ASSETS / target)
        counts[target] = {"source": source, "total": len(facts), "kept": len(kept), "skipped": len(kept.dropped)}
    print(json.dumps({"model": args.model, **counts}))


if __name__ == "__main__":
    main()
