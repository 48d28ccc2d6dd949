"""Seconds from each lesson click to its first answer, in lesson mode, on the loaded model.

Drives the app's widgets in one process (``background=False``, as tests/test_ui*.py do) through
the four step cards for every lesson fact: 1 pick the fact (its "does it know?" line), 2 the
trace, the memories with a key's profile, the knockout, 3 Apply edit (loaded when set-up saved
it), 4 the Probes tab, then Generate letters (the "before" column prepared, "now" generated).
"First answer" is when the click's own answer is drawn (a hook on the widget it writes); "whole"
includes what the app does after it in the same call (the Probes table's re-probe). The goal is
first answer <= 1 s. ``--browser`` then runs the Voila lesson walk in Chromium
(tests/browser, ``test_voila_lesson_walk``), which prints the same clicks' seconds on the page.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/lesson_clicks.py [--model gemma-3-270m] [--facts 10] [--json out.json] [--browser]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def cpu_line() -> str:
    """The CPU's model name and whether it has native bfloat16 (avx512_bf16), from lscpu."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "CPU: unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = fields.get("Model name", "?").strip()
    bf16 = "avx512_bf16" in fields.get("Flags", "").split()
    return f"CPU: {name}; {fields.get('CPU(s)', '?').strip()} CPUs; avx512_bf16 {'yes' if bf16 else 'no'}"


class Clock:
    """Seconds of each click: to its first answer (``seen``) and to the click's return."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._first: float | None = None

    def seen(self, *_args) -> None:
        if self._first is None:
            self._first = time.perf_counter()

    def click(self, fact: str, name: str, fn, *, check=None) -> None:
        self._first = None
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        first = (self._first or end) - start
        if check is not None:
            problem = check()
            if problem:
                raise SystemExit(f"{fact}: {name}: {problem}")
        self.rows.append({"fact": fact, "click": name, "first": round(first, 3), "whole": round(end - start, 3)})
        print(f"{first:6.2f} s first  {end - start:6.2f} s whole  {name}  [{fact}]", flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--facts", type=int, default=10, help="lesson facts to walk (default: all ten)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--browser", action="store_true", help="then the lesson walk in Chromium (Voila)")
    parser.add_argument("--no-generate", action="store_true",
                        help="skip Generate letters (its \"now\" column is sampled live unless set-up saved it)")
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)

    import torch

    import workbench as wb
    from workbench.ui.app import Workbench

    model = wb.load_model(args.model) if args.model else wb.load_model()
    app = Workbench(model, background=False, lesson=True)
    strip = app.lesson
    # In the app the greedy answers run in a thread once the Probes tab opens; with
    # background=False they would run inside that click, which a page never waits for.
    app.probes.answers_on.value = False
    print(f"threads {torch.get_num_threads()}; lesson: {strip.lesson.source or strip.lesson.note}", flush=True)
    clock = Clock()
    # First answers: the widget each click writes first.
    app.fact.predictions.observe(clock.seen, "value")
    for panel, widget in ((app.trace, app.trace.figures), (app.memories, app.memories.table),
                          (app.knockout, app.knockout.figures)):
        widget.observe(clock.seen, "children")
    app.edit.card.observe(clock.seen, "value")
    app.probes.knowledge.texts.observe(clock.seen, "value")

    def errors() -> str:
        shown = [p.error.text for p in (strip, app.fact, app.trace, app.memories, app.knockout, app.edit, app.probes)
                 if p.error.text]
        return "; ".join(shown)

    facts = strip.lesson.facts[: args.facts]
    for i, fact in enumerate(facts, 1):
        name = fact.subject
        if i > 1:
            clock.click(name, "choose the fact (1 · Does it know?)", lambda i=i: setattr(strip.choice, "value", i),
                        check=errors)
        else:
            clock.click(name, "1 · Does it know?", lambda: strip.go(1), check=errors)
        clock.click(name, "2 · Where? → Trace", lambda: strip.go(2), check=errors)
        clock.click(name, "Memories (peak, key profile)", lambda: strip.go(2, "memories"), check=errors)
        clock.click(name, "Knockout", lambda: strip.go(2, "knockout"), check=errors)
        clock.click(name, "3 · Edit → tab", lambda: strip.go(3), check=errors)
        clock.click(name, "Apply edit (default method)", app.edit.task.button.click, check=errors)
        loaded = "Prepared ahead" in app.edit.card.value
        clock.rows[-1]["prepared"] = loaded
        clock.click(name, "4 · Did its knowledge change? → Probes", lambda: strip.go(4), check=errors)
        if not args.no_generate:
            clock.click(name, "Generate letters (before prepared)", app.probes.knowledge.task.button.click,
                        check=errors)
        app.edit.revert_all_button.click()

    worst = max(r["first"] for r in clock.rows)
    over = [r for r in clock.rows if r["first"] > 1.0]
    print(f"\nworst first answer {worst:.2f} s; {len(over)} of {len(clock.rows)} clicks over 1 s"
          + "".join(f"\n  {r['first']:.2f} s  {r['click']} [{r['fact']}]" for r in over), flush=True)
    out = {"model": model.name, "cpu": cpu_line(), "threads": torch.get_num_threads(),
           "lesson": str(strip.lesson.source), "clicks": clock.rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if args.browser:
        root = Path(__file__).resolve().parents[1]
        subprocess.run([sys.executable, "-m", "pytest", "tests/browser/test_voila.py", "-m", "browser", "-k",
                        "lesson", "-s", "-q"], cwd=root, check=False)
    return out


if __name__ == "__main__":
    main()
