"""Benchmark: fast causal tracing vs the straightforward way (ROME's reference loop).

Both use the same model, prompt, noise (seed) and noise scale, in one process.
The straightforward way runs, per (kind, token, layer), one forward pass of the
clean prompt plus N corrupted copies through the whole model with full logits;
every cell costs the same, so by default it is timed on a spread of cells and
scaled to the whole grid (``--full-naive`` runs all of it, ~10 min on 2 cores).

Usage:
    WORKBENCH_CACHE=/tmp/wbcache .venv/bin/python benchmarks/trace.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("WORKBENCH_PROGRESS", "0")


def spread_cells(n_tokens: int, n_layers: int, count: int, first: int) -> list[tuple[int, int]]:
    """``count`` cells spread over tokens from ``first`` on and over all layers
    (cells before ``first`` are trivial for the fast path, so they are not sampled:
    that would flatter neither side)."""
    cells = []
    for i in range(count):
        t = first + (i * 7) % (n_tokens - first)
        layer = (i * 5 + 1) % n_layers
        cells.append((t, layer))
    return list(dict.fromkeys(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--naive-cells", type=int, default=6, help="cells per kind timed the straightforward way")
    parser.add_argument("--full-naive", action="store_true", help="run the straightforward way on every cell")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import workbench as wb
    from workbench.locate.cells import KINDS
    from workbench.locate.noise import embedding_std
    from workbench.locate.reference import trace_reference
    from workbench.locate.spans import subject_span
    from workbench.locate.tracing import trace

    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris")
    model = wb.load_model(args.model)
    t0 = time.perf_counter()
    std = embedding_std(model)  # once per model (cached); not part of either timing
    std_s = time.perf_counter() - t0
    ids = model.encode(fact.text)
    begin, _ = subject_span(model, ids, fact.text, fact.subject)
    n_tokens, n_layers = len(ids), model.n_layers

    t0, c0 = time.perf_counter(), time.process_time()
    fast = trace(model, fact, kinds=KINDS, samples=args.samples, noise_std=std)
    fast_s, fast_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    if args.full_naive:
        cells = [(t, layer) for t in range(n_tokens) for layer in range(n_layers)]
    else:
        cells = spread_cells(n_tokens, n_layers, args.naive_cells, begin)
    t0, c0 = time.perf_counter(), time.process_time()
    ref = trace_reference(model, fact, kinds=KINDS, samples=args.samples, noise_std=std, cells=cells)
    naive_measured_s, naive_cpu_measured_s = time.perf_counter() - t0, time.process_time() - c0
    naive_cpu_s = naive_cpu_measured_s / (len(KINDS) * len(cells)) * len(KINDS) * n_tokens * n_layers
    per_cell = naive_measured_s / (len(KINDS) * len(cells))
    naive_s = per_cell * len(KINDS) * n_tokens * n_layers
    diff = max(abs(ref[k][c] - fast.scores[k][c]) for k in KINDS for c in cells)

    out = {
        "model": args.model,
        "prompt": fact.text,
        "n_tokens": n_tokens,
        "n_layers": n_layers,
        "samples": args.samples,
        "threads": torch.get_num_threads(),
        "naive_s": round(naive_s, 2),
        "naive_measured_s": round(naive_measured_s, 2),
        "naive_cells_measured": len(KINDS) * len(cells),
        "naive_cells_total": len(KINDS) * n_tokens * n_layers,
        "naive_extrapolated": not args.full_naive,
        "fast_s": round(fast_s, 2),
        "speedup": round(naive_s / fast_s, 1),
        "max_abs_diff": float(diff),
        # CPU seconds of this process: less sensitive than wall time to other load on the machine
        "naive_cpu_s": round(naive_cpu_s, 1),
        "fast_cpu_s": round(fast_cpu_s, 1),
        "speedup_cpu": round(naive_cpu_s / fast_cpu_s, 1),
        "load_avg_1min": round(os.getloadavg()[0], 1),
        "full_trace_10tok_s": round(fast_s, 2),
        "noise_std": std,
        "noise_std_s": round(std_s, 2),
        "answer": fast.answer,
        "clean_prob": round(fast.clean_prob, 4),
        "corrupted_prob": round(fast.corrupted_prob, 4),
        "peak_token_layer": {k: [int(i) for i in np.unravel_index(int(np.argmax(v)), v.shape)] for k, v in fast.scores.items()},
    }
    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
