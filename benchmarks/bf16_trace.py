"""Benchmark: the three-kind causal trace in float32 against the bfloat16 paths, and where
bfloat16's error enters; writes the measurement ``precision="auto"`` reads.

Variants, each a full three-kind trace of the Eiffel Tower (10 samples, same seed):
float32; bfloat16 blocks with the mixed unembedding (the bfloat16 path); bfloat16 blocks
with a float32 unembedding; float32 blocks with the mixed unembedding. The largest
difference of each from float32 says which part moves the scores. ``auto`` takes
bfloat16 only where that difference is within ``BF16_BOUND`` (1e-3).

Usage (alone on the machine; on a CPU with native bfloat16):
    .venv/bin/python benchmarks/bf16_trace.py --write    # assets/results/bf16_trace.json
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--write", action="store_true", help="record the result in assets/results/bf16_trace.json")
    args = parser.parse_args(argv)

    import numpy as np
    from throughput import cpu

    import workbench as wb
    import workbench.locate.sweep as sweep
    from workbench.locate.trace_settings import BF16_BOUND, BF16_MEASURED
    from workbench.runtime.lowp import usable

    model = wb.load_model(args.model)
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris")
    if not usable(model):
        print("this CPU has no native bfloat16 (or the model is not float32 on a CPU): the bfloat16 path "
              "would be emulated; nothing measured")
        return 1

    def run(precision: str, *, mixed: bool = True, blocks: bool = True):
        saved = (sweep._mixed_ok, sweep._blocks_in)
        if not mixed:
            sweep._mixed_ok = lambda m: False
        if not blocks:
            sweep._blocks_in = lambda m, p, s: contextlib.nullcontext()
        try:
            t = time.perf_counter()
            r = wb.trace(model, fact, kinds="all", samples=10, precision=precision, cache=False)
            return r, time.perf_counter() - t
        finally:
            sweep._mixed_ok, sweep._blocks_in = saved

    ref, t32 = run("float32")
    rows = [{"variant": "float32", "seconds": t32, "max_abs_difference": 0.0}]
    for label, kw in (("bfloat16 blocks, mixed unembedding (the bfloat16 path)", {}),
                      ("bfloat16 blocks, float32 unembedding", {"mixed": False}),
                      ("float32 blocks, mixed unembedding", {"blocks": False})):
        r, seconds = run("bfloat16", **kw)
        diff = max(float(np.abs(np.asarray(r.scores[k]) - np.asarray(ref.scores[k])).max()) for k in r.scores)
        rows.append({"variant": label, "seconds": seconds, "max_abs_difference": diff})
    for row in rows:
        print(f"{row['variant']:>55}: {row['seconds']:6.1f} s, largest |difference| from float32 "
              f"{row['max_abs_difference']:.2e}")
    path_error = rows[1]["max_abs_difference"]
    print(f"bound {BF16_BOUND:g}: precision='auto' takes {'bfloat16' if path_error <= BF16_BOUND else 'float32'}")
    if args.write:
        data = json.loads(BF16_MEASURED.read_text()) if BF16_MEASURED.exists() else {"models": {}}
        data["bound"] = BF16_BOUND
        data["models"][str(model.name)] = {
            "max_abs_difference": path_error, "rows": rows, "cpu": cpu(),
            "command": "python benchmarks/bf16_trace.py --write",
        }
        BF16_MEASURED.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {BF16_MEASURED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
