"""How ROME's scores depend on the number of corpus tokens behind C = E[k kᵀ].

For each sample count: compute (or load) C at the layer, edit N known facts one
at a time with ROME, record CounterFact efficacy / paraphrase / neighbourhood,
and how far u = C⁻¹k* turns from the one of the largest sample count (cosine).
Prints JSON.

Usage:
    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/stats.py --layer 4 --samples 2000 5000 20000 --n 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import workbench as wb  # noqa: E402
from edit import bench_single  # noqa: E402
from workbench.editing.optimize import build_batch, capture, context_prefixes  # noqa: E402
from workbench.editing.stats import second_moment  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=4)
    ap.add_argument("--samples", type=int, nargs="+", default=[2000, 5000, 20000])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--facts", default="assets/known_facts.json")
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    args = ap.parse_args(argv)
    model = wb.load_model(args.model)
    facts = [f for f in wb.read_facts(args.facts) if f.target_new and f.target_true][: args.n]
    hook = model.roles.hook("ffn_keys", args.layer)
    keys = capture(model, build_batch(model, facts, context_prefixes(model, 10), kl_prompt=None, with_targets=False), [hook])[hook]
    Cs = {}
    rows = []
    for s in sorted(args.samples):
        t = time.perf_counter()
        Cs[s] = second_moment(model, args.layer, samples=s)
        rows.append({"samples": s, "stats_seconds": time.perf_counter() - t})
    ref = Cs[max(Cs)]

    def us(C):
        ridge = 1e-4 * float(C.diagonal().mean())
        return torch.linalg.solve(C + ridge * torch.eye(C.shape[0], dtype=C.dtype), keys.T).T

    u_ref = us(ref)
    for row in rows:
        u = us(Cs[row["samples"]])
        row["cos_u_vs_largest"] = float(torch.nn.functional.cosine_similarity(u, u_ref, dim=-1).mean())
        row["cond_C"] = float(torch.linalg.cond(Cs[row["samples"]] + 1e-4 * float(Cs[row["samples"]].diagonal().mean()) * torch.eye(model.d_mlp, dtype=torch.float64)))
        r = bench_single(model, facts, "rome", [args.layer], {"samples": row["samples"]})
        row.update({k: r[k] for k in ("efficacy", "paraphrase", "neighborhood", "seconds_per_edit")})
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"model": args.model, "layer": args.layer, "n_facts": len(facts), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
