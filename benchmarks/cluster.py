"""Serial against Ray-parallel evaluation: the same report fact by fact, and the wall-time ratio.

Usage::

    # both runs in this process, one after the other (the figure the README quotes):
    python benchmarks/cluster.py --method rome --limit 40 --workers 2 --metrics teacher
    # or compare two reports written by `workbench evaluate ... --report PATH`:
    python benchmarks/cluster.py --compare serial.json parallel.json

Prints one JSON object: both runs' wall and per-edit seconds, the speed-up, and the
largest difference between the two reports over every per-fact score (rows must
match fact by fact; seconds are left out). With ``--out`` it also writes that JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _numbers(value, prefix=""):
    """Every number inside a row's score dicts, by a path name."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix, float(value)


def compare(a, b) -> dict:
    """Fact-by-fact agreement of two reports (same facts in the same order)."""
    if len(a.rows) != len(b.rows):
        return {"same_facts": False, "rows": [len(a.rows), len(b.rows)]}
    worst, where, mismatched = 0.0, None, []
    for ra, rb in zip(a.rows, b.rows):
        if (ra.index, ra.subject, ra.target_new) != (rb.index, rb.subject, rb.target_new):
            return {"same_facts": False, "first_mismatch": ra.index}
        if (ra.error is None) != (rb.error is None):
            mismatched.append(ra.index)
        for field in ("before", "after", "fluency_before", "fluency_after", "perplexity_after"):
            xa, xb = dict(_numbers(getattr(ra, field))), dict(_numbers(getattr(rb, field)))
            if xa.keys() != xb.keys():
                mismatched.append(ra.index)
                continue
            for key in xa:
                d = abs(xa[key] - xb[key])
                if math.isnan(d):
                    continue
                if d > worst:
                    worst, where = d, f"row {ra.index} {field}.{key}"
    return {"same_facts": True, "max_abs_difference": worst, "at": where, "rows_that_differ_in_kind": mismatched}


def _run(model, facts, args, workers):
    from workbench.evaluation import evaluate

    t0 = time.perf_counter()
    report = evaluate(model, facts, method=args.method, limit=args.limit, metrics=args.metrics, workers=workers)
    return report, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="rome")
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--workers", default="2")
    p.add_argument("--metrics", default="teacher")
    p.add_argument("--dataset", default=str(ROOT / "assets" / "known_facts.json"))
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--compare", nargs=2, metavar=("SERIAL", "PARALLEL"), default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import workbench as wb
    from workbench.evaluation import read_report

    if args.compare:
        a, b = (read_report(x) for x in args.compare)
        walls = [r.summary.get("seconds_total") for r in (a, b)]
    else:
        model = wb.load_model(args.model)
        facts = wb.read_facts(args.dataset)
        workers = args.workers if args.workers == "auto" else int(args.workers)
        a, wall_a = _run(model, facts, args, 1)
        b, wall_b = _run(model, facts, args, workers)
        walls = [wall_a, wall_b]
    out = {
        "method": a.summary["method"], "n": [a.summary["n"], b.summary["n"]],
        "workers": [a.settings.get("workers", 1), b.settings.get("workers")],
        "wall_seconds": walls, "speedup": walls[0] / walls[1] if all(walls) else None,
        "seconds_per_edit": [a.summary["seconds_per_edit"], b.summary["seconds_per_edit"]],
        **compare(a, b),
        "threads": wb.thread_policy(),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
