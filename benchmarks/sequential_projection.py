"""Benchmark: how long a 1,000-edit sequential ROME curve takes, projected from its first edits.

Runs ROME one fact a call on the first ``--edits`` records of CounterFact (all records, known
or not, as sequential-editing papers do) with a curve point every ``--every`` edits whose
intermediate points score a fixed sample of ``--score-sample`` facts, and measures the edit
time per fact and the cost of a curve point. The projection to 1,000 edits: the edits at the
measured rate, nine intermediate points at the measured sampled-point cost, and a last point
scoring all 1,000 facts at the measured per-fact scoring rate.

Usage (alone on the machine):
    .venv/bin/python benchmarks/sequential_projection.py --edits 200 --json assets/results/sequential_projection.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact-edit-1k.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--score-sample", type=int, default=200)
    parser.add_argument("--target", type=int, default=1000, help="the curve's length to project to")
    parser.add_argument("--dataset", default=str(DATA))
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)

    from throughput import cpu

    import workbench as wb
    import workbench.evaluation.sequential as seq

    model = wb.load_model()
    wb.editing.prepare(model, "rome")
    facts = wb.read_facts(args.dataset)[: args.edits]
    points: list[tuple[int, float]] = []
    real = seq.score_all

    inside = []

    def timed_score_all(model, facts, *a, **k):
        t = time.perf_counter()
        inside.append(1)
        try:
            out = real(model, facts, *a, **k)
        finally:
            inside.pop()
        points.append((len(facts), time.perf_counter() - t))
        return out

    immediate: list[float] = []
    real_facts = seq.score_facts

    def timed_score_facts(*a, **k):
        t = time.perf_counter()
        out = real_facts(*a, **k)
        if not inside:  # a fact's own scores right after its edit, not a curve point's
            immediate.append(time.perf_counter() - t)
        return out

    seq.score_all, seq.score_facts = timed_score_all, timed_score_facts
    t = time.perf_counter()
    report = wb.evaluate(model, facts, method="rome", mode="sequential", every=args.every, known_only=False,
                         score_sample=args.score_sample, metrics="teacher,generation")
    wall = time.perf_counter() - t
    seq.score_all, seq.score_facts = real, real_facts
    # An edit's cost: the edit and its own scores right after it (every fact's "immediate" row).
    edit_seconds = sum(r.seconds or 0.0 for r in report.rows) + sum(immediate)
    per_edit = edit_seconds / len(report.rows)
    before = points[0]  # the unedited scores of every fact
    curve = points[1:]
    per_fact_scored = sum(s for _, s in curve) / max(1, sum(n for n, _ in curve))
    point_overhead = (wall - edit_seconds - sum(s for _, s in points)) / max(1, len(curve))  # perplexity, fluency
    n_points = args.target // args.every
    projected = (args.target * per_edit + before[1] / before[0] * args.target
                 + (n_points - 1) * (min(args.score_sample, args.target) * per_fact_scored + point_overhead)
                 + args.target * per_fact_scored + point_overhead)
    out = {"edits": len(report.rows), "every": args.every, "score_sample": args.score_sample, "wall_seconds": wall,
           "seconds_per_edit": per_edit, "seconds_per_fact_scored": per_fact_scored,
           "seconds_per_point_besides_scoring": point_overhead, "curve_n_scored": [p.n_scored for p in report.curve],
           "projected_seconds_to_target": projected, "target": args.target, "cpu": cpu(),
           "command": "python benchmarks/sequential_projection.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(f"{len(report.rows)} edits in {wall:.0f} s: {per_edit:.2f} s per edit and its own scores, {per_fact_scored:.2f} s per fact "
          f"scored, {point_overhead:.0f} s per point besides scoring; scored {out['curve_n_scored']}")
    print(f"projected to {args.target} edits: {projected / 3600:.2f} h")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
