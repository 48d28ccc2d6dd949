"""Write the knowledge table's implication probes for the bundled and shared edit facts, filtered by a model.

For every fact with a new object (``assets/known_facts.json`` and
``../shared/data/counterfact-edit-1k.json``; ``known_1000`` has no new objects),
:func:`workbench.evaluation.knowledge.implication_probes` writes the probes; a probe
is kept only if the unedited model answers each of its second hops. Writes
``assets/knowledge/implications_<model>.json`` with every kept probe and the counts
(written, kept and dropped per kind). It does not change the bundled dataset.

Usage::

    python scripts/build_implications.py                      # gemma-3-270m
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"known_facts": ROOT / "assets" / "known_facts.json",
           "counterfact-edit-1k": ROOT.parent / "shared" / "data" / "counterfact-edit-1k.json"}


def main() -> None:
    import workbench as wb
    from workbench.evaluation.knowledge import implication_probes, known_probes

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    args = p.parse_args()
    start = time.perf_counter()
    model = wb.load_model(args.model)
    rows, written, kept_kinds = [], Counter(), Counter()
    considered = 0
    for source, path in SOURCES.items():
        if not path.exists():
            continue
        for fact in wb.read_facts(path):
            if not fact.target_new:
                continue
            considered += 1
            probes = implication_probes(fact)
            if probes:
                rows.append((source, fact, probes))
                written.update(p.kind for p in probes)
    every = [p for _, _, probes in rows for p in probes]
    kept_all, _ = known_probes(model, every)
    kept_ids = {id(p) for p in kept_all}
    out_facts = []
    for source, fact, probes in rows:
        kept = [p for p in probes if id(p) in kept_ids]
        kept_kinds.update(p.kind for p in kept)
        if kept:
            out_facts.append({"source": source, "case_id": fact.case_id, "subject": fact.subject,
                              "prompt": fact.prompt, "target_true": fact.target_true, "target_new": fact.target_new,
                              "implication_prompts": [{"prompt": p.prompt, "target": p.target, "kind": p.kind}
                                                      for p in kept]})
    about = {
        "built_by": "python scripts/build_implications.py --model " + args.model,
        "model": args.model, "facts_with_a_new_object": considered, "facts_with_a_probe": len(rows),
        "facts_with_a_kept_probe": len(out_facts), "probes_written": dict(written), "probes_kept": dict(kept_kinds),
        "probes_dropped": {k: written[k] - kept_kinds[k] for k in written},
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = ROOT / "assets" / "knowledge" / f"implications_{args.model}.json"
    out.write_text(json.dumps({"about": about, "facts": out_facts}, ensure_ascii=False, indent=1) + "\n",
                   encoding="utf-8")
    print(json.dumps(about, indent=1))


if __name__ == "__main__":
    main()
