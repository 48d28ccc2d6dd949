"""Wall time of a full independent evaluation (default: ROME on 200 facts).

Usage::

    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/evaluate.py --method rome --n 200

Prints one JSON object: facts evaluated, wall seconds (model load excluded),
seconds per fact, seconds per edit, and the time projected to 200 facts when
fewer were run (linear: each independent fact costs the same on average).
The goal is <= 15 min for ROME on 200 facts on 2 CPU cores with the key
statistics already cached (the first ROME edit builds them otherwise).

``--cost-of-metrics`` runs the same facts twice in one process, first with the
teacher-forced scores only, then with ``--metrics`` (default: all but the letter
test), and prints the ratio of the two wall times: what the critics' measures
cost on top of an evaluation (the goal: at most 2x for ROME).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="rome")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--mode", default="independent")
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--dataset", default=str(ROOT / "assets" / "known_facts.json"))
    # 20: the setting of the committed assets/results runs (fluency and perplexity after
    # the edit are measured on every 20th fact; each such sample costs about 10 s on 2 cores).
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--metrics", default="teacher,generation,question,plus")
    p.add_argument("--cost-of-metrics", action="store_true",
                   help="run teacher-only first, then --metrics, and print the wall-time ratio")
    args = p.parse_args(argv)
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    import torch

    import workbench as wb
    from workbench.evaluation import evaluate

    model = wb.load_model(args.model)
    facts = wb.read_facts(args.dataset)
    extra = {}
    if args.cost_of_metrics:
        # The first ROME edit of a process loads the key statistics: a warm-up edit keeps that
        # out of both timings.
        evaluate(model, facts, method=args.method, mode=args.mode, limit=1, every=args.every, metrics="teacher")
        t0 = time.perf_counter()
        evaluate(model, facts, method=args.method, mode=args.mode, limit=args.n, every=args.every, metrics="teacher")
        extra["teacher_only_wall_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    report = evaluate(model, facts, method=args.method, mode=args.mode, limit=args.n, every=args.every,
                      metrics=args.metrics)
    wall = time.perf_counter() - t0
    if args.cost_of_metrics:
        extra["metrics"] = args.metrics
        extra["ratio_to_teacher_only"] = round(wall / extra["teacher_only_wall_seconds"], 2)
    s = report.summary
    print(json.dumps({**extra,
        "method": args.method, "mode": args.mode, "model": args.model, "n": s["n"], "n_skipped": s["n_skipped"],
        "every": args.every, "wall_seconds": round(wall, 1), "seconds_per_fact": round(wall / s["n"], 2),
        "seconds_per_edit": s["seconds_per_edit"], "projected_200_facts_seconds": round(wall / s["n"] * 200, 1),
        "threads": torch.get_num_threads(), "efficacy_score": s["efficacy_score"],
        "paraphrase_score": s["paraphrase_score"], "neighborhood_score": s["neighborhood_score"],
        "gen_efficacy": s.get("gen_efficacy"), "gen_paraphrase": s.get("gen_paraphrase"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
