"""Load times and probe latency of the default model.

Prints one JSON line: cold first load (conversion from the GGUF into an empty
cache), warm load (from the cache), and the latency of probing 10 prompts.

Run: .venv/bin/python benchmarks/load.py [--model gemma-3-270m] [--skip-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PROMPTS = [
    "The Eiffel Tower is located in the city of", "Steve Jobs was the founder of",
    "Michael Jordan plays the sport of", "BMW has its headquarters in", "The capital of Japan is",
    "The Colosseum is located in", "Toyota is a car maker from", "The native language of Vladimir Putin is",
    "Mount Everest is part of the continent of", "The Beatles were a band from",
]


def _load_in_subprocess(model: str, cache: str) -> float:
    code = (
        "import time, workbench as wb; t=time.perf_counter(); "
        f"wb.load_model({model!r}); print(time.perf_counter()-t)"
    )
    env = {**os.environ, "WORKBENCH_CACHE": cache, "WORKBENCH_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--skip-cold", action="store_true", help="skip the (minute-long) cold conversion")
    args = parser.parse_args()
    cache = os.environ.get("WORKBENCH_CACHE", os.path.expanduser("~/.cache/workbench"))
    result = {"model": args.model}
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as empty:
            result["cold_load_s"] = round(_load_in_subprocess(args.model, empty), 2)
    # Warm: the cache exists (make sure, then time a fresh process).
    _load_in_subprocess(args.model, cache)
    result["warm_load_s"] = round(_load_in_subprocess(args.model, cache), 2)

    import workbench as wb

    model = wb.load_model(args.model)
    wb.probe(model, PROMPTS[:2], targets=["Paris"])  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        wb.probe(model, PROMPTS, targets=["Paris", "Rome"])
        times.append(time.perf_counter() - start)
    result["probe_10_prompts_s"] = round(min(times), 3)
    result["probe_10_prompts_runs_s"] = [round(t, 3) for t in times]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
