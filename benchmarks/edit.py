"""Benchmark the weight-editing methods on known CounterFact facts; prints JSON.

CounterFact's probability comparisons (Meng et al. 2022), measured with
``probe`` (mean per-token log-probability of each object):
efficacy = share of edit prompts with p(new) > p(true); paraphrase = the same
over paraphrase prompts; neighbourhood = share of neighbourhood prompts with
p(true) > p(new). Single-fact methods (rome, ft, kn) edit one fact at a time and
revert; batch methods (memit, pmet) edit all their facts in one update.

Usage:
    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/edit.py --methods rome --n 50
    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/edit.py --methods memit --batch-n 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workbench as wb  # noqa: E402

BATCH_METHODS = {"memit", "pmet"}


def score_facts(model, facts) -> dict:
    """CounterFact efficacy / paraphrase / neighbourhood of ``facts`` on the model as it is now."""
    prompts, targets, kinds = [], [], []
    for f in facts:
        for kind, group in (("efficacy", [f.text]), ("paraphrase", f.paraphrase_prompts), ("neighborhood", f.neighborhood_prompts)):
            for p in group:
                prompts.append(p)
                targets.append([f.target_new, f.target_true])
                kinds.append(kind)
    res = wb.probe(model, prompts, targets=targets, top_k=0)
    hits = {"efficacy": [], "paraphrase": [], "neighborhood": []}
    for kind, p in zip(kinds, res.prompts):
        new, true = p.targets[0].logprob, p.targets[1].logprob
        hits[kind].append(new > true if kind != "neighborhood" else true > new)
    return {k: (sum(v) / len(v) if v else None) for k, v in hits.items()} | {f"n_{k}": len(v) for k, v in hits.items()}


def _mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def bench_single(model, facts, method: str, layers, hparams: dict) -> dict:
    rows, seconds = [], []
    for f in facts:
        start = time.perf_counter()
        # min_prob=0: score every edit as made (a miss is a result), and time the edit alone.
        h = wb.edit(model, f, method=method, layers=layers, min_prob=0, **hparams)
        seconds.append(time.perf_counter() - start)
        rows.append(score_facts(model, [f]))
        h.revert()
        print(json.dumps({"fact": f.subject, "seconds": round(seconds[-1], 2), **rows[-1]}), file=sys.stderr, flush=True)
    return {
        "efficacy": _mean(rows, "efficacy"), "paraphrase": _mean(rows, "paraphrase"),
        "neighborhood": _mean(rows, "neighborhood"), "seconds_per_edit": sum(seconds) / len(seconds),
        "layers": h.layers, "n_facts": len(facts),
    }


def bench_batch(model, facts, method: str, layers, hparams: dict) -> dict:
    start = time.perf_counter()
    h = wb.edit(model, facts, method=method, layers=layers, min_prob=0, **hparams)
    seconds = time.perf_counter() - start
    scores = score_facts(model, facts)
    info = {k: h.info.get(k) for k in ("final_residual_norm", "target_seconds", "stats_seconds")}
    h.revert()
    return scores | {"seconds": seconds, "seconds_per_fact": seconds / len(facts), "layers": h.layers,
                     "n_facts": len(facts), "info": info}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["rome"])
    ap.add_argument("--n", type=int, default=50, help="facts for single-fact methods")
    ap.add_argument("--batch-n", type=int, default=100, help="facts in one batch for memit/pmet")
    ap.add_argument("--facts", default="assets/known_facts.json")
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--layers", default=None, help="comma-separated layers (default: the method's)")
    ap.add_argument("--hparams", default="{}", help='JSON of method hyperparameters, e.g. {"steps": 20}')
    args = ap.parse_args(argv)
    model = wb.load_model(args.model)
    facts = [f for f in wb.read_facts(args.facts) if f.target_new and f.target_true]
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    hparams = json.loads(args.hparams)
    out = {"model": args.model, "facts_file": args.facts, "hparams": hparams, "methods": {}}
    used = max(args.batch_n if BATCH_METHODS & set(args.methods) else 0, args.n if set(args.methods) - BATCH_METHODS else 0)
    out["unedited"] = score_facts(model, facts[:used])
    for method in args.methods:
        if method in BATCH_METHODS:
            out["methods"][method] = bench_batch(model, facts[: args.batch_n], method, layers, hparams)
        else:
            out["methods"][method] = bench_single(model, facts[: args.n], method, layers, hparams)
        print(json.dumps({method: out["methods"][method]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
