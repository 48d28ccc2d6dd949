"""Seconds for one fact's attention knockout over every window (and its attribute rate).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/knockout.py --repeat 5

Loads the default model, runs :func:`workbench.knockout` on the Eiffel Tower fact
once to warm up, then ``--repeat`` times (every window of 9 layers, three edge
groups: one batched pass of the last position), and prints the median, the
fastest and the slowest wall time, the same for :func:`workbench.enrichment`,
the 1-minute load average (other jobs on the machine slow it), and the
subject curve so a reader can see the run did its work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--window", type=int, default=9)
    args = p.parse_args(argv)
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    import torch

    import workbench as wb

    model = wb.load_model(args.model)
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris")
    timings: dict[str, list[float]] = {"knockout": [], "enrichment": []}
    calls = {"knockout": lambda: wb.knockout(model, fact, window=args.window),
             "enrichment": lambda: wb.enrichment(model, fact)}
    results = {name: call() for name, call in calls.items()}  # warm-up: first calls allocate and pick kernels
    for _ in range(args.repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            results[name] = call()
            timings[name].append(time.perf_counter() - start)
    load = os.getloadavg()[0]
    print(f"model {model.name}, {torch.get_num_threads()} threads, 1-min load average {load:.2f} "
          f"on {os.cpu_count()} CPUs")
    for name, times in timings.items():
        print(f"{name:<10}: median {statistics.median(times):.2f} s  (min {min(times):.2f}, max {max(times):.2f}, "
              f"{len(times)} runs)")
    r = results["knockout"]
    print(f"answer {r.answer!r} p={r.clean_prob:.3f}; subject -> last, % change per layer:")
    print("  " + " ".join(f"{100 * c:.0f}" for c in r.changes["subject"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
