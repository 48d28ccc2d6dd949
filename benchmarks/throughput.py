"""Benchmark: independent ROME evaluation with each fact's target search in its own edit,
against the same run with the searches of 8 facts batched (``search_chunk``), in one process.

Both runs edit the same known facts with the same settings and score them with the
teacher-forced and generated measures (drift off: perplexity and fluency cost the same in
both). It prints the seconds of each, their ratio, and whether every fact got the same
verdicts (edit, paraphrase and neighbour flips, teacher-forced and said) with magnitudes
within 1e-3; and, timed alone, the target searches by themselves (one fact at a time
against batches of 8) on the same facts.

Usage (alone on the machine):
    .venv/bin/python benchmarks/throughput.py --facts 48 --json assets/results/throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Per-fact verdicts that must agree; magnitudes that must agree within MAGNITUDE_TOL.
VERDICTS = ("efficacy", "paraphrase", "neighborhood", "gen_efficacy", "gen_paraphrase", "gen_neighborhood")
MAGNITUDES = ("efficacy_magnitude", "paraphrase_magnitude", "neighborhood_magnitude")
MAGNITUDE_TOL = 1e-3


def cpu() -> dict:
    """The CPU model and whether it does bfloat16 natively (its flags decide most timings here)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"model": platform.processor()}
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    return {"model": info.get("Model name", "").strip(), "cpus": info.get("CPU(s)", "").strip(),
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "WORKBENCH_BF16",
                                               "OMP_NUM_THREADS") if k in os.environ}}


def compare_rows(a, b) -> dict:
    """How the two runs' rows differ: facts with another verdict, the largest magnitude difference."""
    other, worst = [], 0.0
    for ra, rb in zip(a.rows, b.rows):
        if ra.after is None or rb.after is None:
            other.append(ra.subject) if (ra.after is None) != (rb.after is None) else None
            continue
        if any(ra.after.get(k) != rb.after.get(k) for k in VERDICTS):
            other.append(ra.subject)
        for k in MAGNITUDES:
            if ra.after.get(k) is not None and rb.after.get(k) is not None:
                worst = max(worst, abs(ra.after[k] - rb.after[k]))
    return {"facts_with_other_verdicts": other, "largest_magnitude_difference": worst}


def time_searches(model, facts, chunk: int) -> tuple[float, float]:
    """Seconds of the ROME target searches of ``facts``: one at a time, then ``chunk`` a batch."""
    import workbench as wb
    from workbench.editing.targets import search_deltas

    requests = [wb.editing.plan_search(model, f, "rome") for f in facts]
    r0 = requests[0]
    t = time.perf_counter()
    for r in requests:
        search_deltas(model, [r.fact], r0.sites, prefixes=r0.prefixes, params=r0.params)
    one = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(requests), chunk):
        search_deltas(model, [r.fact for r in requests[i:i + chunk]], r0.sites, prefixes=r0.prefixes,
                      params=r0.params)
    return one, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=48)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--metrics", default="teacher,generation")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args(argv)

    import torch

    import workbench as wb

    model = wb.load_model()
    wb.editing.prepare(model, "rome")
    facts = list(wb.filter_known(model, wb.bundled_facts()[: 3 * args.facts]))[: args.facts]
    common = dict(method="rome", known_only=False, drift=False, metrics=args.metrics)
    wb.evaluate(model, facts[:2], search_chunk=1, **common)  # warm: caches, allocator, first-call costs
    runs = {}
    for label, chunk in (("one at a time", 1), (f"searches batched by {args.chunk}", args.chunk)):
        t = time.perf_counter()
        runs[label] = (wb.evaluate(model, facts, search_chunk=chunk, **common), time.perf_counter() - t)
    (a, ta), (b, tb) = runs.values()
    search_one, search_many = time_searches(model, facts, args.chunk)
    out = {
        "facts": len(facts), "metrics": args.metrics, "chunk": args.chunk,
        "seconds_one_at_a_time": ta, "seconds_batched": tb, "ratio": ta / tb,
        "search_seconds_one_at_a_time": search_one, "search_seconds_batched": search_many,
        "search_ratio": search_one / search_many,
        **compare_rows(a, b), "cpu": cpu(), "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    for label, (report, seconds) in runs.items():
        print(f"{label:>28}: {seconds:7.1f} s for {len(report.rows)} facts ({seconds / len(report.rows):.2f} s each)")
    print(f"{'ratio':>28}: {out['ratio']:.2f}x")
    print(f"{'target searches alone':>28}: {search_one:.1f} s one at a time, {search_many:.1f} s batched "
          f"({out['search_ratio']:.2f}x)")
    print(f"{'verdicts':>28}: {len(facts) - len(out['facts_with_other_verdicts'])} of {len(facts)} facts the same; "
          f"largest magnitude difference {out['largest_magnitude_difference']:.2e}")
    print(f"{'cpu':>28}: {out['cpu']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
