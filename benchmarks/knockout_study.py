"""Where does attention read the answer off the subject? Attention knockout over 100+ known facts.

Usage (resumable: per-fact rows are written as they finish; stop it and run again with --resume)::

    OMP_NUM_THREADS=1 python benchmarks/knockout_study.py --limit 110 --window 9 3 1 --time-limit 1500 --resume

For each fact of ``assets/known_trace_facts.json`` the default model gets right (the
first ``--limit``; the model's top-1 answer is scored), :func:`workbench.knockout`
blocks the attention edges into the last token from the subject, from the other
tokens and from the last token itself, over a window of ``--window`` layers around
each layer (the paper's 9; 3 and 1 localise it on an 18-layer model). The summary
gives, per edge group and window, the mean relative change in p(answer) over facts
with a 95 % percentile-bootstrap interval over facts; the window whose subject → last
block drops p(answer) most (with a bootstrap interval on *which* window that is); and
how that window relates to the causal-tracing peak and to ROME's edit layer.

Causal traces: none of the study's facts has a per-fact trace committed, so the
study's own facts are compared with the *average* trace of the same facts
(``assets/results/aie_<model>_mlp.json``, the first 105 facts of the same file).
With ``--traced`` (default on) the facts that do have a committed per-fact trace
(``assets/results/tracing_vs_editing/rows.jsonl`` and ``assets/traces/<model>.json``)
are knocked out too, as a separate set, and compared fact by fact.

Writes ``assets/results/knockout_study.json`` (settings, per-fact rows, summary) and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUPS = ("subject", "other", "last")
SAMPLES, SEED = 2000, 0


def fact_key(source: str, fact, window: int) -> str:
    return f"{source}|{fact.case_id}|{fact.subject}|{fact.prompt}|{window}"


def traced_facts(model_name: str):
    """Facts with a committed per-fact causal trace, and each one's peak layer (MLP, last subject token)."""
    import workbench as wb

    out = []  # (source, fact, peak layer, how the peak was measured)
    rows_path = ROOT / "assets/results/tracing_vs_editing/rows.jsonl"
    if rows_path.exists():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("settings", {}).get("model") == model_name]
        peaks = {(r["case_id"], r["subject"]): r["trace_peak_layer"] for r in rows}
        known = {(f.case_id, f.subject): f for f in wb.read_facts(ROOT / "assets" / "known_facts.json")}
        for key, peak in peaks.items():
            if key in known:
                out.append(("tracing_vs_editing", known[key], int(peak), "tracing_vs_editing (3 samples)"))
    shipped = ROOT / "assets/traces" / f"{model_name}.json"
    if shipped.exists():
        data = json.loads(shipped.read_text())
        for entry in data.get("traces", {}).values():
            r = entry["result"]
            scores = r["scores"]["mlp"] if isinstance(r["scores"], dict) else r["scores"]
            row = scores[r["subject_range"][1] - 1]
            peak = max(range(len(row)), key=lambda i: row[i])
            prompt = r["prompt"].replace(r["subject"], "{}", 1)
            fact = wb.Fact(r["subject"], prompt, r["answer"].strip())
            out.append(("traces", fact, int(peak), "assets/traces (3 samples)"))
    return out


def summarise(rows: list[dict], n_layers: int, rome_layer: int, aie_peak: dict | None) -> dict:
    import numpy as np

    from workbench.evaluation.intervals import bootstrap

    summary: dict = {}
    for source_set in ("study", "traced"):
        chosen = [r for r in rows if (r["set"] == source_set)]
        by_window: dict = {}
        for window in sorted({r["window"] for r in chosen}):
            rs = [r for r in chosen if r["window"] == window]
            if not rs:
                continue
            entry: dict = {"n": len(rs), "groups": {}}
            for g in GROUPS:
                m = np.array([r["changes"][g] for r in rs], dtype=np.float64)  # facts x layers
                cells = []
                for layer in range(n_layers):
                    iv = bootstrap(list(m[:, layer]), samples=SAMPLES, seed=SEED)
                    cells.append({"layer": layer, "mean": iv.mean, "lo": iv.lo, "hi": iv.hi})
                mean = m.mean(0)
                worst = int(mean.argmin())
                # Which window drops p most, re-estimated on resampled facts: its percentile interval.
                rng = np.random.default_rng(SEED)
                idx = rng.integers(0, len(rs), size=(SAMPLES, len(rs)))
                where = m[idx].mean(1).argmin(1)
                per_fact = m.argmin(1)
                entry["groups"][g] = {
                    "per_layer": cells,
                    "largest_drop_layer": worst,
                    "largest_drop": cells[worst],
                    "largest_drop_layer_interval": [int(np.quantile(where, 0.025, method="lower")),
                                                    int(np.quantile(where, 0.975, method="higher"))],
                    "largest_drop_layer_share": float((where == worst).mean()),
                    "per_fact_drop_layer_median": float(np.median(per_fact)),
                    "per_fact_drop_layer_counts": np.bincount(per_fact, minlength=n_layers).tolist(),
                }
            sub = entry["groups"]["subject"]
            entry["rome_layer"] = rome_layer
            entry["subject_drop_minus_rome"] = sub["largest_drop_layer"] - rome_layer
            per_fact = np.array([r["changes"]["subject"] for r in rs]).argmin(1)
            entry["per_fact_drop_minus_rome"] = _iv(bootstrap(list(per_fact - rome_layer), samples=SAMPLES, seed=SEED))
            if aie_peak is not None and source_set == "study":
                entry["aie_peak"] = aie_peak
                entry["subject_drop_minus_aie_peak"] = sub["largest_drop_layer"] - aie_peak["layer"]
            traced = [r for r in rs if r.get("trace_peak") is not None]
            if traced:
                diff = [int(np.argmin(r["changes"]["subject"])) - r["trace_peak"] for r in traced]
                entry["per_fact_drop_minus_trace_peak"] = _iv(bootstrap(diff, samples=SAMPLES, seed=SEED))
                entry["per_fact_trace_peak_mean"] = float(np.mean([r["trace_peak"] for r in traced]))
                entry["per_fact_within_1_of_trace_peak"] = float(np.mean([abs(d) <= 1 for d in diff]))
                if len(traced) > 2:
                    a = np.array([int(np.argmin(r["changes"]["subject"])) for r in traced], dtype=float)
                    b = np.array([r["trace_peak"] for r in traced], dtype=float)
                    entry["per_fact_corr_with_trace_peak"] = (float(np.corrcoef(a, b)[0, 1])
                                                              if a.std() > 0 and b.std() > 0 else None)
            by_window[str(window)] = entry
        summary[source_set] = by_window
    return summary


def _iv(iv) -> dict | None:
    return None if iv is None else {"mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n}


def print_table(data: dict) -> None:
    for source_set, by_window in data["summary"].items():
        for window, entry in by_window.items():
            print(f"\n[{source_set}] window {window}, n = {entry['n']} facts: mean relative change in p(answer) "
                  "[95 % bootstrap over facts]")
            print(f"{'layer':>5}  " + "  ".join(f"{g + ' → last':>26}" for g in GROUPS))
            cells = {g: entry["groups"][g]["per_layer"] for g in GROUPS}
            for layer in range(len(cells["subject"])):
                print(f"{layer:>5}  " + "  ".join(
                    f"{100 * c['mean']:+7.1f}% [{100 * c['lo']:+6.1f}, {100 * c['hi']:+6.1f}]"
                    for c in (cells[g][layer] for g in GROUPS)))
            sub = entry["groups"]["subject"]
            lo, hi = sub["largest_drop_layer_interval"]
            d = sub["largest_drop"]
            print(f"largest subject → last drop: window centred on layer {sub['largest_drop_layer']} "
                  f"({100 * d['mean']:+.1f}% [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]); that layer's 95 % "
                  f"interval over resampled facts: {lo}–{hi} (it wins in {100 * sub['largest_drop_layer_share']:.0f}%)")
            print(f"ROME's edit layer: {entry['rome_layer']}")
            if "aie_peak" in entry:
                a = entry["aie_peak"]
                print(f"average causal trace of the same facts ({a['n_facts']} facts, MLP, last subject token) "
                      f"peaks at layer {a['layer']}")
            if "per_fact_drop_minus_trace_peak" in entry:
                x = entry["per_fact_drop_minus_trace_peak"]
                print(f"per fact, knockout drop layer − trace peak: {x['mean']:+.1f} [{x['lo']:+.1f}, {x['hi']:+.1f}] "
                      f"layers (n = {x['n']}; within ±1: {100 * entry['per_fact_within_1_of_trace_peak']:.0f}%)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--facts", default=str(ROOT / "assets" / "known_trace_facts.json"))
    p.add_argument("--limit", type=int, default=110, help="facts of --facts to knock out (unknown ones are skipped)")
    p.add_argument("--window", type=int, nargs="+", default=[9], help="window sizes (layers)")
    p.add_argument("--traced", action=argparse.BooleanOptionalAction, default=True,
                   help="also the facts with a committed per-fact causal trace")
    p.add_argument("--time-limit", type=float, default=None, help="seconds; stop (resumably) before passing it")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    p.add_argument("--out", default=str(ROOT / "assets" / "results" / "knockout_study.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    started = time.perf_counter()
    import torch

    import workbench as wb
    from workbench.editing.defaults import default_layers

    out = Path(args.out)
    model = wb.load_model(args.model)
    data = json.loads(out.read_text()) if args.resume and out.exists() else {}
    if data and data.get("model") != model.name:
        data = {}
    rows: list[dict] = data.get("rows", [])
    done = {r["key"] for r in rows}
    facts = wb.filter_known(model, wb.read_facts(args.facts)[: args.limit])
    todo = [("study", "known_trace_facts", f, None) for f in facts]
    skipped = [f.subject for f in getattr(facts, "dropped", [])]
    if args.traced:
        todo += [("traced", src, f, peak) for src, f, peak, _ in traced_facts(model.name)]
    rome_layer = default_layers(model, "rome")[0]
    aie_path = ROOT / "assets" / "results" / f"aie_{model.name}_mlp.json"
    aie_peak = None
    if aie_path.exists():
        aie = json.loads(aie_path.read_text())
        curve = aie["mean"]["mlp"]["last subject token"]
        aie_peak = {"layer": max(range(len(curve)), key=lambda i: curve[i]), "n_facts": aie["n_facts"],
                    "curve": curve, "source": aie_path.relative_to(ROOT).as_posix(), "command": aie.get("command")}

    def save(final: bool) -> dict:
        data.update({
            "model": model.name, "n_layers": model.n_layers, "facts": Path(args.facts).name, "limit": args.limit,
            "windows": args.window, "groups": list(GROUPS), "answer": "the model's top-1 (the facts are known)",
            "bootstrap": {"samples": SAMPLES, "seed": SEED, "level": 0.95},
            "skipped_unknown": skipped, "rome_layer": rome_layer,
            "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "command": "python benchmarks/knockout_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rows": rows, "complete": final,
            "seconds_this_run": time.perf_counter() - started,
            "seconds_knockout_total": sum(r["seconds"] for r in rows),
        })
        if final or len(rows) % 20 == 0:
            data["summary"] = summarise(rows, model.n_layers, rome_layer, aie_peak)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(out)
        return data

    stopped = False
    for i, (set_name, source, fact, peak) in enumerate(todo):
        for window in args.window:
            key = fact_key(source, fact, window)
            if key in done:
                continue
            if args.time_limit is not None and time.perf_counter() - started > args.time_limit:
                stopped = True
                break
            try:
                r = wb.knockout(model, fact, window=window)
            except wb.WorkbenchError as exc:
                print(f"skip {fact.subject!r}: {exc}", file=sys.stderr, flush=True)
                skipped.append(f"{fact.subject} ({exc})")
                continue
            rows.append({"key": key, "set": set_name, "source": source, "case_id": fact.case_id,
                         "subject": fact.subject, "prompt": fact.prompt, "target_true": fact.target_true,
                         "window": window, "answer": r.answer, "clean_prob": r.clean_prob,
                         "subject_range": r.subject_range, "n_tokens": len(r.tokens),
                         "changes": r.changes, "trace_peak": peak, "warnings": r.warnings,
                         "seconds": r.seconds})
            done.add(key)
            print(f"{i + 1}/{len(todo)} [{set_name}] {fact.subject!r} w={window}: p={r.clean_prob:.3f}, subject drop "
                  f"{100 * min(r.changes['subject']):+.0f}% at layer {min(range(model.n_layers), key=lambda l: r.changes['subject'][l])}"
                  f"{'' if peak is None else f' (trace peak {peak})'}; {r.seconds:.1f} s", file=sys.stderr, flush=True)
            save(False)
        if stopped:
            break
    data = save(not stopped)
    print_table(data)
    print(f"\n{len(rows)} rows; {'stopped at the time limit: run again with --resume' if stopped else 'complete'}; "
          f"{data['seconds_this_run']:.0f} s this run; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
