"""Benchmark: seconds for one prepared ROME edit on the default model, and where they go.

Loads the model, runs ``editing.prepare(model, "rome")`` (key statistics, prefixes), makes one
warm-up edit, then times ``--edits`` edits of different known facts (each reverted before the
next) and reports the median. With ``--profile`` one more edit runs under cProfile and the
cumulative seconds of the edit's phases are printed: the target search, the key capture, the
known-fact probe, the suffix runner's set-up, the weight commit.

Usage (alone on the machine; the laptop setting in the second line):
    .venv/bin/python benchmarks/rome_edit_time.py --edits 5 --profile
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 WORKBENCH_BF16=0 .venv/bin/python benchmarks/rome_edit_time.py
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (label, file suffix, function name): the phases one edit's time is split into.
PHASES = (
    ("edit, all of it", "editing/rome.py", "rome"),
    ("target search (v*)", "editing/targets.py", "optimize_deltas"),
    ("search set-up (SuffixRunner.__init__)", "editing/optimize.py", "__init__"),
    ("key capture (k*)", "editing/optimize.py", "capture"),
    ("known-fact check", "editing/optimize.py", "warn_if_unknown"),
    ("layer site (C⁻¹, prefixes)", "editing/rome.py", "layer_site"),
    ("weight commit", "editing/handle.py", "commit_weights"),
    ("edit call (checks, min_prob probe)", "editing/__init__.py", "edit"),
    ("model forward passes", "torch/nn/modules/module.py", "_call_impl"),
    ("linear layers", "torch/nn/modules/linear.py", "forward"),
)


def phase_seconds(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each phase's function in one profiled edit (0 where not called)."""
    stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    out = {}
    for label, suffix, name in PHASES:
        total = 0.0
        for (file, _line, fn), (_cc, _nc, _tt, ct, callers) in stats.items():
            if fn != name or not file.replace("\\", "/").endswith(suffix):
                continue
            # A recursive or re-entrant function's cumulative time counts once, from outside callers.
            if any(c[2] == name and c[0] == file for c in callers):
                ct = sum(v[3] for c, v in callers.items() if not (c[2] == name and c[0] == file))
            total += ct
        out[label] = round(total, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=5, help="timed edits (after one warm-up)")
    parser.add_argument("--profile", action="store_true", help="profile one more edit by phase")
    parser.add_argument("--facts", default="assets/known_facts.json")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the JSON here")
    args = parser.parse_args(argv)

    import workbench as wb
    from workbench import editing
    from throughput import cpu
    from workbench.runtime.bfloat16 import native_bf16

    t0 = time.perf_counter()
    model = wb.load_model(wb.DEFAULT_MODEL)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    editing.prepare(model, "rome")
    prepare_s = time.perf_counter() - t0
    facts = [f for f in wb.read_facts(args.facts) if f.target_new and f.target_true][: args.edits + 2]

    def one(fact) -> float:
        start = time.perf_counter()
        handle = wb.edit(model, fact, method="rome")
        seconds = time.perf_counter() - start
        handle.revert()
        return seconds

    warm = one(facts[0])
    times = [one(f) for f in facts[1: args.edits + 1]]
    result = {
        "benchmark": "rome_edit_time", "cpu": cpu(), "model": model.name,
        "threads": __import__("torch").get_num_threads(),
        "native_bf16": native_bf16(),
        "load_s": round(load_s, 2), "prepare_s": round(prepare_s, 2), "warmup_s": round(warm, 3),
        "edit_s": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
    }
    if args.profile:
        profile = cProfile.Profile()
        fact = facts[args.edits + 1]
        profile.enable()
        handle = wb.edit(model, fact, method="rome")
        profile.disable()
        handle.revert()
        result["profile_s"] = phase_seconds(profile)
    text = json.dumps(result)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
