"""How long a local Ray pool takes to start, at Ray's default worker niceness and at the driver's.

    python benchmarks/pool_start.py [--model tiny-gemma3] [--workers 2] [--niceness 15 0]

Each niceness gets its own local Ray (a subprocess: Ray's settings are fixed at its start), which
times ``ray.init`` and then ``Pool(model, workers)`` started twice. The figure matters only beside
other busy processes (run it beside a background job to see the starving; alone the two agree):
say what else ran next to the seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = """
import json, logging, sys, time
import ray
import workbench as wb
from workbench.runtime.cluster import Pool
model_name, workers, niceness = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = wb.load_model(model_name)
t = time.perf_counter()
ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False, configure_logging=False,
         logging_level=logging.WARNING, object_store_memory=256 * 2**20,
         _system_config={"worker_niceness": niceness})
out = {"ray_init_s": time.perf_counter() - t, "pool_start_s": []}
for _ in range(2):
    t = time.perf_counter()
    Pool(model, workers).close()
    out["pool_start_s"].append(time.perf_counter() - t)
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-gemma3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--niceness", type=int, nargs="+", default=[15, 0])
    args = ap.parse_args()
    for nice in args.niceness:
        proc = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.workers), str(nice)],
                              capture_output=True, text=True, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"niceness {nice}: the child failed:\n{proc.stderr[-2000:]}")
        r = json.loads(line.removeprefix("RESULT "))
        starts = ", ".join(f"{s:.1f}" for s in r["pool_start_s"])
        print(f"worker niceness {nice:>2}: ray.init {r['ray_init_s']:.1f} s; Pool({args.model}, {args.workers}) "
              f"started in {starts} s")


if __name__ == "__main__":
    main()
