"""Trace the app's first facts at its default settings and commit them in assets/traces/.

The Fact tab lists the examples first, then the bundled facts; a class usually picks
one of the first. With their exact traces committed, "Run trace" on them answers at
once (workbench/locate/trace_cache.py). Traces are made for the loaded weights only: the
file records the model's fingerprint, and other weights under the same name find none.

Resumable: facts already in the file are kept. Run alone (it prints seconds per trace):

    .venv/bin/python scripts/cache_traces.py --n 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import workbench as wb
from workbench.locate.trace_cache import SHIPPED, entry, trace_key
from workbench.ui.fact import EXAMPLES
from workbench.ui.trace import DEFAULT_SAMPLES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--n", type=int, default=20, help="bundled facts after the examples")
    args = ap.parse_args(argv)
    model = wb.load_model(args.model)
    settings = {"kinds": ["mlp"], "samples": DEFAULT_SAMPLES, "noise": 3.0, "window": 10, "seed": 0}
    path = SHIPPED / f"{model.name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if data.get("fingerprint") != model.fingerprint:
        data = {}  # another model's weights: start again
    traces = data.get("traces", {})
    facts = EXAMPLES + wb.bundled_facts()[: args.n]
    for fact in facts:
        started = time.perf_counter()
        key = trace_key(model, fact, **settings)
        if key in traces:
            continue
        result = wb.trace(model, fact, **settings)
        traces[key] = entry(model, fact, result, **settings)[1]
        print(f"{fact.subject!r}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "model": model.name, "fingerprint": model.fingerprint, "settings": settings,
            "command": "python scripts/cache_traces.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "traces": traces,
        }) + "\n")
    print(f"{len(traces)} traces in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
