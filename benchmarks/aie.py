"""The committed average indirect effect: causal tracing over many known facts (ROME, Fig. 2).

Usage::

    python benchmarks/aie.py --kind mlp --samples 3 --limit 105

Traces the first ``--limit`` facts of ``assets/known_trace_facts.json`` (facts the
default model knows), averages the indirect effects by token group and layer, and
writes ``assets/results/aie_<model>_<kind>.json`` with the command that made it.
Notebooks 02 and 05 load that file, since a run over 100+ facts takes longer than a
class (on 2 CPU cores 105 facts took 1,147 s for ``mlp`` at 3 samples, partly beside other jobs). Prints the
peak (group, layer) of each kind and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--kind", default="mlp", choices=["mlp", "attn", "resid", "all"])
    p.add_argument("--samples", type=int, default=3, help="noisy copies per fact (ROME used 10)")
    p.add_argument("--limit", type=int, default=105, help="facts to trace (some may be skipped)")
    p.add_argument("--workers", default="1", help="trace on N Ray workers (the cluster extra; 'auto': one per CPU)")
    p.add_argument("--address", default=None, help="with --workers: a running Ray cluster (auto, ray://...)")
    p.add_argument("--out", default=None, help="JSON path (default assets/results/aie_<model>_<kind>.json)")
    args = p.parse_args(argv)
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    import numpy as np

    import workbench as wb
    from workbench.locate import average_indirect_effect

    model = wb.load_model(args.model)
    t0 = time.perf_counter()
    workers = args.workers if args.workers == "auto" else int(args.workers)
    aie = average_indirect_effect(model, kind=args.kind, samples=args.samples, limit=args.limit,
                                  workers=workers, address=args.address)
    wall = time.perf_counter() - t0
    out = Path(args.out) if args.out else ROOT / "assets" / "results" / f"aie_{args.model}_{args.kind}.json"
    data = aie.to_dict()
    data["command"] = (f"python benchmarks/aie.py --kind {args.kind} --samples {args.samples} --limit {args.limit}"
                       + (f" --model {args.model}" if args.model != "gemma-3-270m" else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data) + "\n")
    peaks = {}
    for kind in aie.kinds:
        group, values = max(((g, np.asarray(v)) for g, v in aie.mean[kind].items() if not np.isnan(v).all()),
                            key=lambda gv: np.nanmax(gv[1]))
        peaks[kind] = {"group": group, "layer": int(np.nanargmax(values)), "effect": float(np.nanmax(values))}
    print(json.dumps({"model": args.model, "n_facts": aie.n_facts, "skipped": len(aie.skipped),
                      "samples": args.samples, "workers": workers, "wall_seconds": round(wall, 1), "peaks": peaks, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
