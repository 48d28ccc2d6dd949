"""Does the causal-trace peak say where to edit? Trace N facts and edit each with ROME at every layer.

For each fact (the first N the model knows in --facts): the MLP tracing effect at the
last subject token at every layer, then a ROME edit at each layer, scored and reverted
(:func:`workbench.evaluation.locality.fact_profile`). Rows go to ``--out`` (JSON lines,
one per fact and layer) as they are made: a stopped run goes on where it left off
when started again with the same arguments. At the end (or with --summary-only) it
prints and writes Hase et al.'s analysis (:func:`~workbench.evaluation.locality.variance_explained`)
for the rewrite score and the paraphrase rewrite score, and a figure of edit success
by layer with the tracing curve over it.

Usage::

    python benchmarks/tracing_vs_editing.py --n 60 --time-limit 36000     # every layer
    python benchmarks/tracing_vs_editing.py --n 6 --layers 0,4,8,12,16 --hparams '{"steps": 10}'
    python benchmarks/tracing_vs_editing.py --summary-only
    # two processes, one thread each, meeting half-way; then one file and the analysis:
    python benchmarks/tracing_vs_editing.py --n 60 --reverse --out rows_b.jsonl
    python benchmarks/tracing_vs_editing.py --n 60 --merge rows_b.jsonl

Cost on this project's 2-core CPU, one thread beside another job: one fact (a trace with
3 samples, then 18 ROME edits, each scored and reverted) took 130-150 s once ROME's
statistics for every layer were cached (computing them took about a minute a layer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import workbench as wb  # noqa: E402
from workbench.evaluation.locality import fact_profile, variance_explained  # noqa: E402

OUT = ROOT / "assets" / "results" / "tracing_vs_editing"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="facts (the first N the model knows)")
    ap.add_argument("--facts", default=str(ROOT / "assets" / "known_facts.json"))
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--layers", default=None, help="comma-separated (default: every layer)")
    ap.add_argument("--trace-samples", type=int, default=3)
    ap.add_argument("--hparams", default="{}", help="JSON of ROME settings, e.g. '{\"steps\": 10}'")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help="start no new fact after this")
    ap.add_argument("--out", default=str(OUT / "rows.jsonl"))
    ap.add_argument("--summary-only", action="store_true", help="analyse the rows already written")
    ap.add_argument("--reverse", action="store_true",
                    help="take the N facts last first: a second process, with another --out, meets the first "
                         "half-way (merge the files with --merge)")
    ap.add_argument("--merge", nargs="*", default=[], metavar="FILE",
                    help="more rows files of the same settings to add to --out (each fact once), then analyse")
    args = ap.parse_args(argv)
    out = Path(args.out)
    hparams = json.loads(args.hparams)
    settings = {"model": args.model, "facts": Path(args.facts).name, "trace_samples": args.trace_samples,
                "hparams": hparams, "layers": args.layers}
    rows = _read(out, settings)
    if args.merge:
        seen = {(r["subject"], r["case_id"]) for r in rows}
        with out.open("a", encoding="utf-8") as fh:
            for other in args.merge:
                for r in _read(Path(other), settings):
                    if (r["subject"], r["case_id"]) not in seen:
                        fh.write(json.dumps(r) + "\n")
                        rows.append(r)
                seen = {(r["subject"], r["case_id"]) for r in rows}
        args.summary_only = True
    if not args.summary_only:
        started = time.perf_counter()
        model = wb.load_model(args.model)
        layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(model.n_layers))
        facts = wb.filter_known(model, [f for f in wb.read_facts(args.facts) if f.target_new])[: args.n]
        done = {(r["subject"], r["case_id"]) for r in rows}
        order = list(enumerate(facts))
        if args.reverse:
            order.reverse()
        out.parent.mkdir(parents=True, exist_ok=True)
        for i, fact in order:
            if (fact.subject, fact.case_id) in done:
                continue
            if args.time_limit is not None and time.perf_counter() - started > args.time_limit:
                print(f"time limit: stopped before fact {i} of {len(facts)}", file=sys.stderr)
                break
            t0 = time.perf_counter()
            new = fact_profile(model, fact, layers=layers, trace_samples=args.trace_samples, **hparams)
            seconds = time.perf_counter() - t0
            with out.open("a", encoding="utf-8") as fh:
                for r in new:
                    fh.write(json.dumps({**r, "settings": settings, "fact_seconds": round(seconds, 1)}) + "\n")
            rows += new
            print(f"fact {i + 1}/{len(facts)} {fact.subject!r}: peak layer {new[0]['trace_peak_layer']}, "
                  f"best edit layer {max(new, key=lambda r: r['rewrite_score'])['layer']}, {seconds:.0f} s",
                  file=sys.stderr, flush=True)
    summary = {o: variance_explained(rows, outcome=o) for o in ("rewrite_score", "paraphrase_rewrite_score")}
    summary["settings"] = settings
    summary["command"] = "python benchmarks/tracing_vs_editing.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out.parent / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from workbench.figures.evaluation import locality_figure

    locality_figure(summary["rewrite_score"]).write_html(out.parent / "figure.html", include_plotlyjs="cdn")
    for o in ("rewrite_score", "paraphrase_rewrite_score"):
        s = summary[o]
        corr = s["per_fact_correlation"] or {}
        print(f"{o}: {s['n_facts']} facts x {len(s['layers'])} layers; R2 layer {s['r2_layer']:.3f}, "
              f"trace {s['r2_trace']:.3f}, both {s['r2_layer_and_trace']:.3f} (added by trace "
              f"{s['r2_added_by_trace']:.3f}); per-fact correlation {corr.get('mean', float('nan')):.2f} "
              f"[{corr.get('lo', float('nan')):.2f}, {corr.get('hi', float('nan')):.2f}]")
    return 0


def _read(path: Path, settings: dict) -> list[dict]:
    """Rows already written with the same settings (others were another run's: refused)."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            print(f"{path}:{n}: not JSON (a run cut off mid-line?); skipped", file=sys.stderr)
            continue
        if row.get("settings") != settings:
            raise SystemExit(f"{path} holds rows of another run ({row.get('settings')}); give another --out")
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
