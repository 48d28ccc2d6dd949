"""Benchmark: the workbench's causal trace against ROME's way of doing it, same process.

Both trace the same model, prompt, noise (seed) and noise scale. The baseline
(``benchmarks/rome_style_trace.py``) is ROME's procedure done as plainly and as
fast as ROME does it: per (kind, token, layer) one batched forward of the clean
prompt plus N noisy copies through an unwrapped Hugging Face model with plain
forward hooks and full logits. Every baseline cell costs the same, so by default
it is timed on a spread of cells and scaled to the whole grid (``--full-baseline``
runs all of it); the scores of those cells are compared with the fast path's.

Usage (alone on the machine; threads as the workbench sets them):
    .venv/bin/python benchmarks/trace.py                # table
    .venv/bin/python benchmarks/trace.py --json         # one JSON line
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


def spread_cells(kinds, n_tokens: int, n_layers: int, count: int, first: int) -> list[tuple[str, int, int]]:
    """``count`` cells per kind spread over tokens from ``first`` on and over all layers
    (cells before ``first`` are free for the fast path, so they are not sampled:
    that would flatter neither side)."""
    cells = []
    for kind in kinds:
        for i in range(count):
            cells.append((kind, first + (i * 7) % (n_tokens - first), (i * 5 + 1) % n_layers))
    return list(dict.fromkeys(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--baseline-cells", type=int, default=12, help="cells per kind timed the ROME way")
    parser.add_argument("--full-baseline", action="store_true", help="run the ROME-style loop on every cell")
    parser.add_argument("--app-samples", type=int, default=3, help="samples of the app's default trace (mlp only)")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from rome_style_trace import load_plain, trace_cells

    import workbench as wb
    from workbench.locate.cells import KINDS
    from workbench.locate.noise import embedding_std, make_noise
    from workbench.locate.spans import subject_span

    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris")
    model = wb.load_model(args.model)
    std = embedding_std(model)  # once per model (cached); not part of either timing
    ids = model.encode(fact.text)
    begin, end = subject_span(model, ids, fact.text, fact.subject)
    n_tokens, n_layers = len(ids), model.n_layers
    wb.trace(model, fact, kinds="mlp", samples=1, noise_std=std)  # warm-up (first-call allocations)

    t0, c0 = time.perf_counter(), time.process_time()
    fast = wb.trace(model, fact, kinds=KINDS, samples=args.samples, noise_std=std)
    fast_s, fast_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    app = wb.trace(model, fact, kinds="mlp", samples=args.app_samples, noise_std=std)
    app_s = time.perf_counter() - t0

    plain = load_plain(args.model)
    if args.full_baseline:
        cells = [(k, t, layer) for k in KINDS for t in range(n_tokens) for layer in range(n_layers)]
    else:
        cells = spread_cells(KINDS, n_tokens, n_layers, args.baseline_cells, begin)
    noise = make_noise(args.samples, end - begin, model.d_model, 3.0 * std, 0)
    input_ids = torch.tensor([ids])
    trace_cells(plain, input_ids, begin, end, noise, fast.answer_id, cells[:1])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    base = trace_cells(plain, input_ids, begin, end, noise, fast.answer_id, cells)
    base_measured_s, base_cpu_measured_s = time.perf_counter() - t0, time.process_time() - c0
    total_cells = len(KINDS) * n_tokens * n_layers
    base_per_cell = base_measured_s / len(cells)
    base_s = base_per_cell * total_cells
    diff = max(abs(base[c] - fast.scores[c[0]][c[1], c[2]]) for c in cells)

    out = {
        "model": args.model,
        "prompt": fact.text,
        "n_tokens": n_tokens,
        "n_layers": n_layers,
        "samples": args.samples,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "precision": fast.precision,
        "rome_style_per_cell_s": round(base_per_cell, 3),
        "rome_style_s": round(base_s, 1),
        "rome_style_cells_measured": len(cells),
        "rome_style_extrapolated": not args.full_baseline,
        "fast_per_cell_s": round(fast_s / total_cells, 4),
        "fast_s": round(fast_s, 2),
        "speedup": round(base_s / fast_s, 1),
        "max_abs_diff": float(diff),
        # CPU seconds of this process: less sensitive than wall time to other load on the machine
        "rome_style_cpu_s": round(base_cpu_measured_s / len(cells) * total_cells, 1),
        "fast_cpu_s": round(fast_cpu_s, 1),
        "app_default_trace_s": round(app_s, 2),
        "app_default": f"mlp, {args.app_samples} samples",
        "load_avg_1min": round(os.getloadavg()[0], 1),
        "answer": fast.answer,
        "clean_prob": round(fast.clean_prob, 4),
        "corrupted_prob": round(fast.corrupted_prob, 4),
        "peak_token_layer": {k: [int(i) for i in np.unravel_index(int(np.argmax(v)), v.shape)] for k, v in fast.scores.items()},
        "app_peak_token_layer": [int(i) for i in np.unravel_index(int(np.argmax(app.scores["mlp"])), app.scores["mlp"].shape)],
    }
    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        for k, v in out.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
