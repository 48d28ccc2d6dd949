"""Benchmark: the thread policies (workbench/threads.py), alone and beside a busy process.

Each policy runs in a fresh Python process (the OpenMP runtime reads its
settings when torch loads, so a policy cannot be switched inside one process),
once alone and once with a synthetic busy process beside it: one pure-Python
loop that keeps one core busy, as a browser, a Jupyter server or another job
would. Each child times, after loading the model:

* forward: one forward pass of 10 short prompts (median of 5);
* probe: ``wb.probe`` of one fact with two targets (median of 3);
* trace: ``wb.trace`` of one fact, mlp, 3 samples;
* rome: one ROME edit with the v* search cut to ``--rome-steps`` steps (then reverted).

Usage (alone on the machine: nothing else may run, the benchmark makes its own load):
    .venv/bin/python benchmarks/threads.py            # table
    .venv/bin/python benchmarks/threads.py --json     # one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Policies compared: WORKBENCH_THREADS values (see workbench/threads.py).
POLICIES = ("torch", "passive", "1")
BUSY = "while True:\n    pass\n"


def child(rome_steps: int) -> dict:
    """Run in the child: time the four workloads under this process's policy."""
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    sys.path.insert(0, str(ROOT))
    import torch

    import workbench as wb

    model = wb.load_model()
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    prompts = [f"The {s} is located in the city of" for s in
               ("Eiffel Tower", "Colosseum", "Louvre", "Big Ben", "Kremlin", "Acropolis",
                "Brandenburg Gate", "Sagrada Familia", "Space Needle", "Golden Gate Bridge")]
    enc = model.tokenizer(prompts, return_tensors="pt", padding=True)

    def forward():
        with torch.no_grad():
            model.hf_model(**enc)

    def timed(fn, repeat: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out = {"policy": wb.thread_policy()}
    out["forward_s"] = timed(forward, 5)
    out["probe_s"] = timed(lambda: wb.probe(model, fact.text, targets=["Paris", "Rome"]), 3)
    t0 = time.perf_counter()
    wb.trace(model, fact, kinds="mlp", samples=3)
    out["trace_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    handle = wb.edit(model, fact, method="rome", steps=rome_steps, check_known=False)
    out["rome_s"] = time.perf_counter() - t0
    handle.revert()
    return out


def run_policy(policy: str, busy: bool, rome_steps: int, timeout: float) -> dict:
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        env.pop(key, None)  # each policy sets these itself
    env["WORKBENCH_THREADS"] = policy
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", "--rome-steps", str(rome_steps)],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rome-steps", type=int, default=3, help="v* search steps of the timed ROME edit")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child at most")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.rome_steps)))
        return 0

    rows = []
    for policy in args.policies.split(","):
        for busy in (False, True):
            got = run_policy(policy, busy, args.rome_steps, args.timeout)
            rows.append({"policy": policy, "load": "busy" if busy else "alone", **got})
            if not args.json:
                print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"cpus": os.cpu_count(), "rome_steps": args.rome_steps, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    keys = ("forward_s", "probe_s", "trace_s", "rome_s")
    print(f"{'policy':>8} {'load':>6} " + " ".join(f"{k:>10}" for k in keys))
    for r in rows:
        cells = [f"{r[k]:10.2f}" if k in r else f"{'-':>10}" for k in keys]
        print(f"{r['policy']:>8} {r['load']:>6} " + " ".join(cells) + (f"  {r['error']}" if "error" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
