"""Benchmark: MEMIT and AlphaEdit editing a batch of known facts in one call, with each fact's
target search run alone (``TARGET_CHUNK = 1``, as before the searches were batched) and in
batches of 8, in one process; seconds per fact and how far the two updates differ.

Usage (alone on the machine):
    .venv/bin/python benchmarks/batch_edit_speed.py --facts 100 --json assets/results/batch_edit_speed.json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["memit", "alphaedit"])
    parser.add_argument("--chunk", type=int, default=8, help="facts per batched target search")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)

    import torch
    from throughput import cpu

    import workbench as wb
    import workbench.editing.memit as memit

    model = wb.load_model()
    facts = list(wb.filter_known(model, wb.bundled_facts()[: 3 * args.facts]))[: args.facts]
    before = {n: p.detach().clone() for n, p in model.hf_model.named_parameters()}
    out = {"facts": len(facts), "cpu": cpu(), "methods": {},
           "command": "python benchmarks/batch_edit_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    for method in args.methods:
        with wb.edit(model, facts[:2], method=method, min_prob=0, check_known=False):
            pass  # warm: key statistics, prefixes, bfloat16 copies
        updates, seconds = {}, {}
        # TARGET_CHUNK is 1 on a CPU by default, so the batched run names its chunk explicitly.
        for chunk in (1, args.chunk):
            memit.TARGET_CHUNK, kept = chunk, memit.TARGET_CHUNK
            t = time.perf_counter()
            with wb.edit(model, facts, method=method, min_prob=0, check_known=False):
                seconds[chunk] = time.perf_counter() - t
                updates[chunk] = {n: (p.detach() - before[n]).double() for n, p in model.hf_model.named_parameters()
                                  if not torch.equal(p, before[n])}
            memit.TARGET_CHUNK = kept
        one, many = sorted(seconds)
        rel = max(float((updates[one][n] - updates[many][n]).norm() / updates[one][n].norm()) for n in updates[one])
        out["methods"][method] = {"seconds_per_fact_one_at_a_time": seconds[one] / len(facts),
                                  "seconds_per_fact_batched": seconds[many] / len(facts),
                                  "ratio": seconds[one] / seconds[many], "chunk": many, "largest_relative_update_difference": rel}
        print(f"{method}: {seconds[one] / len(facts):.2f} s per fact with searches one at a time, "
              f"{seconds[many] / len(facts):.2f} batched by {many} ({seconds[one] / seconds[many]:.2f}x); "
              f"updates differ by {rel:.1e} (relative)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
