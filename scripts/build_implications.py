"""Write the knowledge table's implication probes for the bundled and shared edit facts, filtered by a model.

Sources, in this order (a later fact with the same subject and prompt is skipped):
``assets/known_facts.json`` (the bundled edits), ``assets/data/counterfact-edit-1k.json``,
and ``assets/data/known_1000.json``, whose facts have no new object and get one from
:func:`workbench.evaluation.knowledge.counterfactual_targets` (another object of the same
relation, as CounterFact chose them). :func:`~workbench.evaluation.knowledge.implication_probes`
writes the probes; a probe is kept only if the unedited model answers each of its
second hops (:func:`~workbench.evaluation.knowledge.known_probes`).

Writes ``assets/knowledge/implications_<model>.json``: every fact with a kept probe, in the
workbench format (``read_facts`` and ``workbench evaluate --dataset`` read it), its
``implication_prompts`` the kept probes with their ``kind``, and an ``about`` block with
the counts written, kept and dropped per kind. With ``--fill-bundled``, the bundled
facts' ``implication_prompts`` are replaced by their kept probes too (hand-written
prompts without a kind are kept).

Usage::

    python scripts/build_implications.py --fill-bundled        # gemma-3-270m
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "assets" / "data"
SOURCES = {"known_facts": ROOT / "assets" / "known_facts.json",
           "counterfact-edit-1k": DATA / "counterfact-edit-1k.json",
           "known_1000": DATA / "known_1000.json"}


def main() -> None:
    import workbench as wb
    from workbench.evaluation.knowledge import counterfactual_targets, implication_probes, known_probes
    from workbench.facts import BUNDLED, Implication

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--fill-bundled", action="store_true", help="write the kept probes into assets/known_facts.json")
    args = p.parse_args()
    start = time.perf_counter()
    model = wb.load_model(args.model)
    rows, written, kept_kinds = [], Counter(), Counter()
    considered: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    for source, path in SOURCES.items():
        facts = wb.read_facts(path)
        if source == "known_1000":
            facts = counterfactual_targets(facts)
        for fact in facts:
            key = (fact.subject, fact.prompt)
            if not fact.target_new or key in seen:
                continue
            seen.add(key)
            considered[source] += 1
            probes = implication_probes(fact)
            if probes:
                rows.append((source, fact, probes))
                written.update(p.kind for p in probes)
    every = [p for _, _, probes in rows for p in probes]
    kept_all, _ = known_probes(model, every)
    kept_ids = {id(p) for p in kept_all}
    out_facts, by_source, bundled_probes = [], Counter(), {}
    for source, fact, probes in rows:
        kept = [p for p in probes if id(p) in kept_ids]
        kept_kinds.update(p.kind for p in kept)
        if not kept:
            continue
        by_source[source] += 1
        implications = tuple(Implication(p.prompt, p.target, p.kind) for p in kept)
        if source == "known_facts":
            bundled_probes[(fact.subject, fact.prompt, fact.target_new)] = implications
        record = {"source": source, **replace(fact, implication_prompts=implications).to_dict()}
        out_facts.append(record)
    about = {
        "built_by": "python scripts/build_implications.py --model " + args.model,
        "model": args.model,
        "facts_with_a_new_object": dict(considered),
        "facts_with_a_probe": len(rows),
        "facts_with_a_kept_probe": len(out_facts),
        "facts_with_a_kept_probe_by_source": dict(by_source),
        "probes_written": dict(written), "probes_kept": dict(kept_kinds),
        "probes_dropped": {k: written[k] - kept_kinds[k] for k in written},
        "new_objects_of_known_1000": "counterfactual_targets(seed=0): another object of the same relation",
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = ROOT / "assets" / "knowledge" / f"implications_{args.model}.json"
    out.write_text(json.dumps({"about": about, "facts": out_facts}, ensure_ascii=False, indent=1) + "\n",
                   encoding="utf-8")
    if args.fill_bundled:
        bundled = wb.read_facts(BUNDLED)
        filled = []
        for fact in bundled:
            generated = bundled_probes.get((fact.subject, fact.prompt, fact.target_new), ())
            own = tuple(i for i in fact.implication_prompts if not i.kind
                        and i.prompt not in {g.prompt for g in generated})
            filled.append(replace(fact, implication_prompts=own + generated))
        wb.write_facts(filled, BUNDLED)
        about["bundled_facts_with_a_probe"] = sum(bool(f.implication_prompts) for f in filled)
    print(json.dumps(about, indent=1))


if __name__ == "__main__":
    main()
