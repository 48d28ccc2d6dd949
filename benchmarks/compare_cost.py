"""Benchmark: seconds per fact of each part of what the app's Compare runs, per method.

Compare (``workbench/ui/compare.py``) calls ``compare(model, facts, methods=..., limit=5,
metrics=..., drift=False, search_chunk=1)`` in independent mode: it picks the first known
facts once; then, per method, it scores the unedited model on them (one batch) and, fact by
fact, edits, scores the edited model and reverts. "Also score the generated answers" adds
greedy answers (edit prompt, paraphrases, neighbours, the question form, the neighbours after
the edit statement) and CounterFact+'s teacher-forced prompts, before and after. Independent
mode measures no perplexity or fluency (``drift=False``); sequential and batch modes do.

This script makes that very call (the panel's own ``METRICS``) once per method with the
teacher-forced scores only and once with the generated answers too, and writes per fact:

- ``edit``: the edit (the report's ``seconds_per_edit``, mean of both runs);
- ``teacher``: the teacher-forced scoring, before and after (first run's seconds per fact less its edits);
- ``said``: what the generated answers add (second run's seconds per fact less the first's);
- ``generate``: the part of ``said`` spent in greedy generation (the rest: CounterFact+ prompts, judging);

and, once per fact compared, ``select`` (picking the known facts: a call's wall time less its
method's run), and ``drift`` (one perplexity and one fluency measurement, as sequential and
batch modes take before and after a method's edits).

The panel's estimate is ``select × n + Σ_methods (edit + teacher [+ said]) × n``. With
``--check`` the script then runs the panel's default comparison (5 facts, its default methods,
generated answers on) as the panel runs it, and prints the measured seconds beside the estimate.

Usage (figures in assets/results/compare_cost.json; say in it what else ran on the machine):
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/compare_cost.py \
        --json assets/results/compare_cost.json \
        --check --note "beside other jobs"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed_compare(model, facts, methods: list[str], limit: int, *, said: bool) -> tuple:
    """One comparison as the panel runs it: ``(report, wall seconds, seconds in greedy generation)``."""
    from workbench.evaluation import compare, generated
    from workbench.ui.compare import METRICS

    real, spent = generated.measure, [0.0]

    def measure(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    generated.measure = measure  # scores.py looks it up at each call
    try:
        t0 = time.perf_counter()
        report = compare(model, facts, methods=methods, mode="independent", limit=limit, metrics=METRICS[said],
                         drift=False, search_chunk=1)
        wall = time.perf_counter() - t0
    finally:
        generated.measure = real
    return report, wall, spent[0]


def method_costs(model, facts, method: str, limit: int) -> tuple[dict, list[float]]:
    """A method's per-fact seconds by part, and the ``select`` seconds per fact of its two calls."""
    out, selects, totals = {}, [], {}
    for said in (False, True):
        report, wall, generating = timed_compare(model, facts, [method], limit, said=said)
        s = report.reports[0].summary
        n = s["n"]
        totals[said] = s["seconds_total"] / n
        out[f"edit_{said}"] = s["seconds_per_edit"] or 0.0
        selects.append((wall - s["seconds_total"]) / n)
        if said:
            out["generate"] = generating / n
    edit = (out.pop("edit_False") + out.pop("edit_True")) / 2
    parts = {"edit": edit, "teacher": max(0.0, totals[False] - edit), "said": max(0.0, totals[True] - totals[False]),
             "generate": out["generate"]}
    return {k: round(v, 3) for k, v in parts.items()}, selects


def drift_seconds(model, facts) -> float:
    """One perplexity and one fluency measurement with ``evaluate``'s defaults."""
    from dataclasses import fields

    from workbench.evaluation.fluency import fluency, generation_prompts
    from workbench.evaluation.perplexity import perplexity
    from workbench.evaluation.settings import EvalSettings

    s = {f.name: f.default for f in fields(EvalSettings)}
    prompts = [generation_prompts(f, limit=1)[0] for f in facts[: s["fluency_prompts"]]]
    t0 = time.perf_counter()
    perplexity(model, n_texts=s["perplexity_texts"], max_tokens=s["perplexity_tokens"])
    fluency(model, prompts, max_new_tokens=s["fluency_tokens"])
    return round(time.perf_counter() - t0, 3)


def check(model, costs: dict) -> dict:
    """The panel's default comparison, run by the panel: measured seconds beside its estimate."""
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import State

    state = State(model)
    panel = ComparePanel(state, background=False)
    panel.costs = costs
    estimated = panel.estimated_seconds()
    t0 = time.perf_counter()
    panel.run()
    measured = time.perf_counter() - t0
    if panel.error.value:
        raise SystemExit(f"the panel's comparison failed: {panel.error.text}")
    return {"methods": list(panel.methods.value), "facts": int(panel.limit.value), "said": bool(panel.said.value),
            "estimated_s": round(estimated, 1), "measured_s": round(measured, 1)}


def machine(threads: int, note: str) -> str:
    """One line for the estimate's text: CPU, cores, torch threads, and what else ran."""
    import torch
    from throughput import cpu

    c = cpu()
    line = (f"{c.get('model') or 'a CPU'} ({c.get('cpus', '?')} CPUs), {threads} torch thread"
            f"{'s' if threads != 1 else ''}, torch {torch.__version__}")
    return line + (f", {note}" if note else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="*", default=None, help="default: the methods Compare picks")
    parser.add_argument("--facts", type=int, default=5, help="facts per comparison (the panel's default)")
    parser.add_argument("--check", action="store_true", help="also time the panel's default comparison")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    import workbench as wb
    from throughput import cpu
    from workbench.editing import SPECS, method_names, prepare

    load0 = os.getloadavg()
    model = wb.load_model(wb.DEFAULT_MODEL)
    facts = [f for f in wb.bundled_facts() if f.target_new]  # the panel's set (its current fact aside)
    methods = args.methods or [m for m in method_names() if SPECS[m].compare_default]
    per_fact, selects = {}, []
    for method in methods:
        prepare(model, method)  # as the app does while it loads: one-time costs are not per fact
        per_fact[method], sel = method_costs(model, facts, method, args.facts)
        selects += sel
        print(f"{method}: {per_fact[method]} s per fact", flush=True)
    threads = torch.get_num_threads()
    result = {
        "benchmark": "compare_cost", "model": model.name, "facts": args.facts,
        "machine": machine(threads, args.note), "cpu": cpu(), "threads": threads,
        "load_average_before": [round(x, 2) for x in load0],
        "command": ("OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/compare_cost.py "
                    + shlex.join(argv or sys.argv[1:])),
        "per_fact": per_fact, "select": round(statistics.median(selects), 3), "drift": drift_seconds(model, facts),
    }
    if args.check:
        result["check"] = check(model, result)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
