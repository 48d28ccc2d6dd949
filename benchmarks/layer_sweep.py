"""ROME at every layer: which layer edits best? Writes assets/sweeps/<model>_rome.json.

For each layer, edits each of N known facts one at a time (revert after each)
and records CounterFact efficacy / paraphrase / neighbourhood (see
benchmarks/edit.py). ``workbench.editing.defaults`` reads the file to choose
default layers. Computes the key statistics of all layers in one corpus pass first.

Usage:
    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/layer_sweep.py --n 12
    python benchmarks/layer_sweep.py --n 12 --workers auto     # layers side by side on Ray
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import workbench as wb  # noqa: E402
from edit import bench_single  # noqa: E402
from workbench.editing.defaults import sweep_path  # noqa: E402
from workbench.editing.stats import DEFAULT_SAMPLES, second_moments  # noqa: E402


def _sweep_layer(model, item) -> dict:
    """ROME at one layer over the facts: that layer's row of the sweep."""
    layer, facts, hparams = item
    r = bench_single(model, facts, "rome", [layer], hparams)
    return {"layer": layer, **{k: r[k] for k in ("efficacy", "paraphrase", "neighborhood", "seconds_per_edit")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--layers", default=None, help="comma-separated (default: all)")
    ap.add_argument("--facts", default="assets/known_facts.json")
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    ap.add_argument("--hparams", default="{}")
    ap.add_argument("--workers", default="1", help="layers on N Ray workers (the cluster extra; 'auto': one per CPU)")
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
    rows = [done[layer] for layer in layers if layer in done]
    todo = [layer for layer in layers if layer not in done]

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        out = {"model": args.model, "method": "rome", "n_facts": len(facts), "hparams": hparams,
               "facts_file": args.facts, "layers": sorted(rows, key=lambda x: x["layer"])}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))

    if args.workers != "1" and todo:
        # Layers are independent settings: one Ray task per layer, each worker with its own model;
        # the key statistics computed above are shipped to the workers, not computed again.
        from workbench.runtime.cluster import Pool, cache_files
        from workbench.editing.stats import statistics_files

        files = cache_files([f for layer in todo for f in statistics_files(model, "rome", layers=[layer],
                                                                              samples=args.samples)])
        workers = args.workers if args.workers == "auto" else int(args.workers)
        with Pool(model, workers, files=files, paths=[str(Path(__file__).resolve().parent)]) as pool:
            outcomes = pool.map(_sweep_layer, [(layer, facts, hparams) for layer in todo], desc="layers")
        for layer, outcome in zip(todo, outcomes):
            if outcome is not None and outcome.ok:
                record(outcome.value)
            else:
                print(f"layer {layer} failed: {outcome.error if outcome else 'not run'}", file=sys.stderr)
    else:
        for layer in todo:
            record(_sweep_layer(model, (layer, facts, hparams)))
    print(json.dumps(json.loads(path.read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
