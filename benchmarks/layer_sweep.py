"""ROME at every layer: which layer edits best? Writes assets/sweeps/<model>_rome.json.

For each layer, edits each of N known facts one at a time (revert after each)
and records CounterFact efficacy / paraphrase / neighbourhood (see
benchmarks/edit.py). ``workbench.editing.defaults`` reads the file to choose
default layers. Computes the key statistics of all layers in one corpus pass first.

Usage:
    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/layer_sweep.py --n 12
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
from edit import bench_single  # noqa: E402
from workbench.editing.defaults import sweep_path  # noqa: E402
from workbench.editing.stats import DEFAULT_SAMPLES, second_moments  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--layers", default=None, help="comma-separated (default: all)")
    ap.add_argument("--facts", default="assets/known_facts.json")
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    ap.add_argument("--hparams", default="{}")
    args = ap.parse_args(argv)
    model = wb.load_model(args.model)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(model.n_layers))
    facts = [f for f in wb.read_facts(args.facts) if f.target_new and f.target_true][: args.n]
    hparams = {"samples": args.samples, **json.loads(args.hparams)}
    second_moments(model, layers, samples=args.samples)
    path = sweep_path(model)
    # Resume: keep the layers already measured with the same settings.
    done = {}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("n_facts") == len(facts) and old.get("hparams") == hparams:
            done = {r["layer"]: r for r in old["layers"]}
    rows = []
    for layer in layers:
        if layer in done:
            rows.append(done[layer])
            continue
        t = time.perf_counter()
        r = bench_single(model, facts, "rome", [layer], hparams)
        row = {"layer": layer, **{k: r[k] for k in ("efficacy", "paraphrase", "neighborhood", "seconds_per_edit")}}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        out = {"model": args.model, "method": "rome", "n_facts": len(facts), "hparams": hparams,
               "facts_file": args.facts, "layers": sorted(rows, key=lambda x: x["layer"])}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        del t
    print(json.dumps(json.loads(path.read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
