"""MEMIT with many facts in one batch: how do λ (``mom2_weight``), the layer window and the passes change the scores?

The per-fact targets (the v* search at the window's last layer) do not depend on
λ, so they are computed once per window and reused for every λ; each λ then
costs only the layer updates and the scoring. Prints one JSON line per setting
(CounterFact efficacy / paraphrase / neighbourhood as in benchmarks/edit.py,
held-out perplexity) and a JSON summary at the end.

Usage:
    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/memit_sweep.py --n 100 --weights 2048,512,128 --windows 0-4,2-6
    python benchmarks/memit_sweep.py --n 100 --weights 2048 --passes 1,2,3
    python benchmarks/memit_sweep.py --n 100 --weights 2048,512 --targets last,each
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import workbench as wb  # noqa: E402
import workbench.editing.memit as memit_module  # noqa: E402
from edit import score_facts  # noqa: E402
from workbench.editing.stats import DEFAULT_SAMPLES  # noqa: E402
from workbench.evaluation import perplexity  # noqa: E402


class TargetCache:
    """Wraps ``optimize_deltas`` in the MEMIT module: one search per (fact, sites), reused across λ."""

    def __init__(self) -> None:
        self.real = memit_module.optimize_deltas
        self.results: dict = {}
        self.hits = 0

    def __call__(self, model, fact, sites, **kwargs):
        key = (fact.subject, fact.prompt, fact.target_new, tuple(sites), repr(sorted(kwargs.items(), key=lambda kv: kv[0])))
        if key in self.results:
            self.hits += 1
        else:
            self.results[key] = self.real(model, fact, sites, **kwargs)
        return self.results[key]


def parse_window(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="facts in the one batch")
    ap.add_argument("--weights", default="2048,512,128", help="comma-separated λ values (mom2_weight)")
    ap.add_argument("--windows", default="0-4", help="comma-separated layer windows, e.g. 0-4,2-6")
    ap.add_argument("--facts", default="assets/known_facts.json")
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--passes", default="1", help="comma-separated numbers of passes through the layers")
    ap.add_argument("--targets", default="last",
                    help="comma-separated: last (MEMIT's residual target), each (a δ per layer)")
    ap.add_argument("--perplexity-texts", type=int, default=10)
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="corpus tokens behind each C")
    args = ap.parse_args(argv)
    model = wb.load_model(args.model)
    facts = [f for f in wb.read_facts(args.facts) if f.target_new and f.target_true][: args.n]
    cache = TargetCache()
    memit_module.optimize_deltas = cache
    out = {"model": args.model, "n_facts": len(facts), "facts_file": args.facts,
           "unedited": score_facts(model, facts), "perplexity_before": perplexity(model, n_texts=args.perplexity_texts),
           "runs": []}
    print(json.dumps({"unedited": out["unedited"], "perplexity_before": out["perplexity_before"]}), file=sys.stderr, flush=True)
    for window in args.windows.split(","):
        layers = parse_window(window)
        settings = [(t, float(w), int(p)) for t in args.targets.split(",") for w in args.weights.split(",")
                    for p in args.passes.split(",")]
        for targets, weight, passes in settings:
            start = time.perf_counter()
            h = wb.edit(model, facts, method="memit", layers=layers, mom2_weight=weight, passes=passes,
                        targets=targets, samples=args.samples, check_known=False, min_prob=0)
            seconds = time.perf_counter() - start
            try:
                row = {"layers": layers, "targets": targets, "mom2_weight": weight, "passes": passes,
                       **score_facts(model, facts),
                       "perplexity": perplexity(model, n_texts=args.perplexity_texts),
                       "final_residual_norm": h.info.get("final_residual_norm"),
                       "residual_norms": h.info.get("residual_norms"), "misses": h.info.get("misses"),
                       "target_seconds": h.info.get("target_seconds"), "seconds": seconds}
            finally:
                h.revert()
            out["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    out["target_cache_hits"] = cache.hits
    out["command"] = "python benchmarks/memit_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from results import hardware  # noqa: E402  (benchmarks/results.py)

    out["hardware"] = hardware(model)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
