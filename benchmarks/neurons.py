"""Do knowledge neurons matter more than random neurons? Prints one JSON object.

For each of the first N known facts of the default model, find knowledge
neurons (Dai et al. 2022) for the true object after the fact's prompt, then
measure p(true object's first token) with them suppressed (coefficient 0 at the
last position) and with as many random keys of the same layers suppressed
(same count per layer, fixed seed).

    WORKBENCH_CACHE=/tmp/wbcache .venv/bin/python benchmarks/neurons.py --facts 20 --layers 15 16 17
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import workbench as wb
from workbench.locate.neurons import knowledge_neurons, measure_effect


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--facts", type=int, default=20)
    ap.add_argument("--layers", type=int, nargs="*", default=None, help="default: all layers")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    start = time.perf_counter()
    model = wb.load_model(args.model)
    facts = wb.bundled_facts() if args.model == wb.DEFAULT_MODEL else wb.filter_known(model, wb.bundled_facts())
    facts = [f for f in facts if f.target_true][: args.facts]
    rng = random.Random(args.seed)
    rows = []
    for fact in facts:
        report = knowledge_neurons(model, fact.text, fact.target_true, layers=args.layers, steps=args.steps,
                                   threshold=args.threshold, measure=False)
        kn = report.pairs()
        if not kn:
            rows.append({"prompt": fact.text, "target": fact.target_true, "n_neurons": 0})
            continue
        per_layer: dict[int, int] = {}
        for layer, _ in kn:
            per_layer[layer] = per_layer.get(layer, 0) + 1
        rand = [(layer, k) for layer, n in per_layer.items() for k in rng.sample(range(model.d_mlp), n)]
        e_kn = measure_effect(model, [fact.text], fact.target_true, kn)
        e_rand = measure_effect(model, [fact.text], fact.target_true, rand)
        rows.append({
            "prompt": fact.text, "target": fact.target_true, "n_neurons": len(kn),
            "p_before": e_kn.before, "p_kn_suppressed": e_kn.suppressed, "p_kn_amplified": e_kn.amplified,
            "p_random_suppressed": e_rand.suppressed, "p_random_amplified": e_rand.amplified,
            "completeness_rel_error": max(
                abs(s - d) / max(abs(d), 1e-12) for s, d in report.prompts[0].completeness),
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    done = [r for r in rows if r["n_neurons"]]

    def mean(key):
        return statistics.fmean(r[key] for r in done) if done else None

    def rel_drop(key):
        return statistics.fmean((r["p_before"] - r[key]) / r["p_before"] for r in done) if done else None

    print(json.dumps({
        "model": args.model, "facts": len(rows), "facts_with_neurons": len(done), "layers": args.layers,
        "steps": args.steps, "threshold": args.threshold,
        "mean_neurons": mean("n_neurons"),
        "p_before": mean("p_before"),
        "p_kn_suppressed": mean("p_kn_suppressed"), "p_random_suppressed": mean("p_random_suppressed"),
        "p_kn_amplified": mean("p_kn_amplified"), "p_random_amplified": mean("p_random_amplified"),
        "rel_drop_kn": rel_drop("p_kn_suppressed"), "rel_drop_random": rel_drop("p_random_suppressed"),
        "kn_beats_random": sum(r["p_kn_suppressed"] < r["p_random_suppressed"] for r in done),
        "max_completeness_rel_error": max((r["completeness_rel_error"] for r in done), default=None),
        "seconds": time.perf_counter() - start,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
