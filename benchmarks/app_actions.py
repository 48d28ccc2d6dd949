"""Seconds each default action of the app takes on the loaded model, in one process.

The browser test times the same actions from click to first answer, with Chromium and
the Voila server on the same cores; this measures the library work alone (no browser),
each action as the app runs it with ``background=False``: the call returns when the
action and what the app does after it are done. So "pick", "Apply edit" and "Compare"
include the Probes table's re-probe and greedy answers, which the app in the browser runs
in the background after showing the action's own answer (the browser's figures are the
time to that first answer). Generate and Compare draw their answer as it grows: their
"first answer" lines are the seconds to the first drawing (first words, first fact's row).

Usage:
    python benchmarks/app_actions.py [--model gemma-3-270m] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    import workbench as wb
    from workbench.ui.app import Workbench

    model = wb.load_model(args.model)
    facts = wb.bundled_facts()
    eiffel, other = facts[0], facts[1]
    app = Workbench(model, fact=eiffel, facts=facts, background=False)
    seconds: dict[str, float] = {}

    first: dict[str, float] = {}  # an action whose answer grows: seconds to its first drawing

    def timed(name, fn):
        start = time.perf_counter()
        first.clear()
        fn()
        seconds[name] = round(time.perf_counter() - start, 2)
        if first:
            seconds[f"{name}: first answer"] = round(first["at"] - start, 2)
        errors = [p.error.text for p in (app.fact, app.trace, app.edit, app.probes, app.compare) if p.error.text]
        if errors:
            raise SystemExit(f"{name}: the app showed an error: {errors}")

    # The growing drawings, noted when they first come: Generate's "now" column as its words
    # come, Compare's table after each fact.
    show_generations, show_partial = app.probes._show_generations, app.compare.show_partial

    def generations_drawn(payload, pending=(), *, growing=False):
        if growing:
            first.setdefault("at", time.perf_counter())
        show_generations(payload, pending, growing=growing)

    def compare_drawn(report):
        first.setdefault("at", time.perf_counter())
        show_partial(report)

    app.probes._show_generations, app.compare.show_partial = generations_drawn, compare_drawn
    timed("pick a bundled fact (probes and answers)", lambda: app.fact.pick(other))
    timed("pick it back", lambda: app.fact.pick(eiffel))
    timed("Probe now", app.probes.refresh_button.click)
    timed("greedy answers of the probe rows and the generations' before", app.probes.run_answers)
    timed("Run trace (default settings, trace cache)", app.trace.task.button.click)
    timed("Apply edit (ROME, app defaults, card)", app.edit.task.button.click)
    timed("Generate (3 prompts x 20 tokens, now only)", app.probes.run_generations)
    app.edit.revert_all_button.click()
    app.compare.methods.value = ("in-context",)
    app.compare.said.value = False
    timed("Compare (in-context, 5 facts, teacher-forced)", app.compare.task.button.click)
    out = {"model": model.name, "threads": torch.get_num_threads(), "seconds": seconds}
    for name, s in seconds.items():
        print(f"{s:7.2f} s  {name}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
