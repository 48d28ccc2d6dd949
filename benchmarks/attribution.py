"""Benchmark: how well the attribution preview agrees with the exact causal trace, over known facts.

For each fact of ``assets/known_trace_facts.json`` (facts the default model gets
right), the exact trace and the attribution preview with the same noise; per
fact and kind, over the cells from the first subject token on:

* ``spearman``: rank correlation of the two grids;
* ``peak_cell``: the preview's best cell is the exact trace's best cell;
* ``peak_layer``: at the last subject token, the preview's best layer is the exact one's
  (what a user reads off the mlp panel to pick a layer), and within one layer.

Each fact is a line of ``--out`` as it finishes, so a run is resumable (``--resume``)
and can be time-limited (``--time-limit``). The summary prints means with 95 %
bootstrap intervals over facts.

Usage (alone, or say what ran beside it):
    .venv/bin/python benchmarks/attribution.py --facts 50 --samples 3 \
        --out assets/results/attribution_agreement.jsonl --resume --time-limit 1500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    import numpy as np
    import pandas as pd

    # Average ranks for ties (the resid rows past the last layer's reach tie in the exact grid).
    ra, rb = pd.Series(np.ravel(a)).rank().to_numpy(), pd.Series(np.ravel(b)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare(exact, preview) -> dict:
    """Agreement of one fact's preview with its exact trace, per kind."""
    import numpy as np

    begin, end = exact.subject_range
    out = {}
    for kind in exact.scores:
        e = np.asarray(exact.scores[kind])[begin:]
        p = np.asarray(preview.scores[kind])[begin:]
        e_last, p_last = exact.scores[kind][end - 1], preview.scores[kind][end - 1]
        out[kind] = {
            "spearman": spearman(e.ravel(), p.ravel()),
            "peak_cell": bool(np.unravel_index(e.argmax(), e.shape) == np.unravel_index(p.argmax(), p.shape)),
            "peak_layer": bool(int(np.argmax(e_last)) == int(np.argmax(p_last))),
            "peak_layer_within_1": bool(abs(int(np.argmax(e_last)) - int(np.argmax(p_last))) <= 1),
            "exact_peak_layer": int(np.argmax(e_last)),
            "preview_peak_layer": int(np.argmax(p_last)),
        }
    return out


def summarise(rows: list[dict]) -> dict:
    import numpy as np

    from workbench.evaluation.intervals import bootstrap

    out = {"facts": len(rows)}
    for kind in ("resid", "mlp", "attn"):
        got = [r["agreement"][kind] for r in rows if kind in r["agreement"]]
        if not got:
            continue
        out[kind] = {}
        for key in ("spearman", "peak_cell", "peak_layer", "peak_layer_within_1"):
            values = [float(g[key]) for g in got if not np.isnan(float(g[key]))]
            iv = bootstrap(values)
            out[kind][key] = None if iv is None else {"mean": iv.mean, "low": iv.lo, "high": iv.hi, "n": iv.n}
    out["seconds_exact_mean"] = float(np.mean([r["exact_s"] for r in rows]))
    out["seconds_preview_mean"] = float(np.mean([r["preview_s"] for r in rows]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=50)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "assets" / "results" / "attribution_agreement.jsonl"))
    parser.add_argument("--resume", action="store_true", help="keep the facts already in --out")
    parser.add_argument("--time-limit", type=float, default=None, help="stop starting facts after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = parser.parse_args(argv)

    import workbench as wb

    out = Path(args.out)
    done: list[dict] = []
    if args.resume and out.exists():
        done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        done = [r for r in done if r.get("samples") == args.samples and r.get("model") == args.model]
    seen = {r["case_id"] for r in done}
    facts = wb.read_facts(ROOT / "assets" / "known_trace_facts.json")[: args.facts]
    model = wb.load_model(args.model)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if args.resume and out.exists() else "w"
    with out.open(mode) as fh:
        if mode == "w":
            done = []
        for fact in facts:
            if fact.case_id in seen:
                continue
            if args.time_limit is not None and time.perf_counter() - started > args.time_limit:
                print(f"time limit reached after {len(done)} facts", file=sys.stderr)
                break
            t0 = time.perf_counter()
            preview = wb.trace(model, fact, samples=args.samples, method="attribution")
            preview_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            exact = wb.trace(model, fact, samples=args.samples)
            exact_s = time.perf_counter() - t0
            row = {"case_id": fact.case_id, "subject": fact.subject, "prompt": fact.text, "model": args.model,
                   "samples": args.samples, "exact_s": exact_s, "preview_s": preview_s,
                   "agreement": compare(exact, preview)}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            done.append(row)
            print(f"{len(done):>3} {fact.subject!r}: mlp spearman {row['agreement']['mlp']['spearman']:.2f} "
                  f"({exact_s:.1f} s exact, {preview_s:.2f} s preview)", file=sys.stderr)
    summary = summarise(done) if done else {"facts": 0}
    summary.update(samples=args.samples, model=args.model, threads=wb.thread_policy())
    if args.json:
        print(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
