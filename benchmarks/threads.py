"""Benchmark: the thread policies (workbench/runtime/threads.py), alone and beside a busy process.

Each policy runs in a fresh Python process (the OpenMP runtime reads its
settings when torch loads, so a policy cannot be switched inside one process),
once alone and once with a synthetic busy process beside it (``--busy``): a
pure-Python loop that keeps one core busy, as a browser or a Jupyter server
would, or a second torch job with torch's default threads. Each child times, after loading the model:

* forward: one forward pass of 10 short prompts (median of 5);
* probe: ``wb.probe`` of one fact with two targets (median of 3);
* trace: ``wb.trace`` of one fact, mlp, 2 samples;
* rome: one ROME edit with the v* search cut to ``--rome-steps`` steps (then reverted).

Usage (alone on the machine: nothing else may run, the benchmark makes its own load):
    .venv/bin/python benchmarks/threads.py            # table
    .venv/bin/python benchmarks/threads.py --busy torch
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
#: Policies compared: WORKBENCH_THREADS values (see workbench/runtime/threads.py).
POLICIES = ("torch", "passive", "1")
#: The synthetic busy process: a pure-Python loop on one core (a browser, a server), or a
#: second torch job with torch's own default threads (whose idle threads spin too).
BUSY = {
    "python": "while True:\n    pass\n",
    "torch": ("import torch\na = torch.randn(512, 512)\n"
              "while True:\n    for _ in range(20):\n        a @ a\n    sum(range(20000))\n"),
}


def child(rome_steps: int) -> dict:
    """Run in the child: time the four workloads under this process's policy."""
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    sys.path.insert(0, str(ROOT))
    # workbench first: the policy must be set before torch loads its OpenMP runtime.
    import workbench as wb  # noqa: I001
    import torch

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

    out = {"read_back": wb.thread_policy()}
    if not out["read_back"]["in_effect"]:
        raise SystemExit("torch was imported before workbench: the policy is not in effect")
    out["forward_s"] = timed(forward, 5)
    out["probe_s"] = timed(lambda: wb.probe(model, fact.text, targets=["Paris", "Rome"]), 3)
    t0 = time.perf_counter()
    wb.trace(model, fact, kinds="mlp", samples=2)
    out["trace_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    handle = wb.edit(model, fact, method="rome", steps=rome_steps, check_known=False, min_prob=0)
    out["rome_s"] = time.perf_counter() - t0
    handle.revert()
    return out


def run_policy(policy: str, busy: str | None, rome_steps: int, timeout: float) -> dict:
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        env.pop(key, None)  # each policy sets these itself
    env["WORKBENCH_THREADS"] = policy
    hog_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    hog = subprocess.Popen([sys.executable, "-c", BUSY[busy]], env=hog_env) if busy else None
    try:  # (the finally below also runs on Ctrl-C or a kill of this process's group)
        proc = subprocess.run([sys.executable, __file__, "--child", "--rome-steps", str(rome_steps)],
                              env=env, capture_output=True, text=True, timeout=timeout, check=False)
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
    parser.add_argument("--busy", default="python", choices=sorted(BUSY), help="the process run beside (default python)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.rome_steps)))
        return 0

    rows = []
    for policy in args.policies.split(","):
        for busy in (None, args.busy):
            got = run_policy(policy, busy, args.rome_steps, args.timeout)
            rows.append({"policy": policy, "load": f"busy ({busy})" if busy else "alone", **got})
            if not args.json:
                print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"cpus": os.cpu_count(), "rome_steps": args.rome_steps, "busy": args.busy, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    keys = ("forward_s", "probe_s", "trace_s", "rome_s")
    print(f"{'policy':>8} {'load':>14} " + " ".join(f"{k:>10}" for k in keys))
    for r in rows:
        cells = [f"{r[k]:10.2f}" if k in r else f"{'-':>10}" for k in keys]
        print(f"{r['policy']:>8} {r['load']:>14} " + " ".join(cells) + (f"  {r['error']}" if "error" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
