"""Seconds from the "Generate letters" click to the first text, to the six letters "now" and to
everything ("before" too) in the Probes tab's "Did its knowledge change?" view (issue 39's goal:
first text within 2 s, all six letters within 5 s on 2 cores alone), on the default model after
one ROME edit of the Eiffel Tower, in the cases a user meets: the "before" letters already
made in the background after the fact was picked, and not; and both columns made in the
background (after the pick and after the edit), the click coming once they are (the seconds
the background took are reported beside it).

Usage::

    python benchmarks/knowledge_view_speed.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("WORKBENCH_PROGRESS", "0")


def main(argv=None) -> int:
    import torch

    import workbench as wb
    from workbench.ui import Workbench

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    model = wb.load_model()
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    app = Workbench(model, fact=fact, background=False)
    app.probes.answers_on.value = False
    view = app.probes.knowledge
    results: dict[str, list[dict]] = {"before made ahead": [], "before made on the click": [],
                                      "now made ahead too": []}
    view.prepare_before(model)  # as the Probes tab does in the background after a pick
    with wb.edit(model, fact, method="rome"):
        for _ in range(args.repeats):
            for case in results:  # the second case's click makes "before" again for the next repeat
                if case == "before made on the click":
                    view.before.clear()
                ahead = None
                view.ahead.clear()
                if case == "now made ahead too":
                    # as the Probes tab does in the background after an edit, once its answers are made
                    start = time.perf_counter()
                    view.prepare_now(model)
                    ahead = time.perf_counter() - start
                view.task.button.click()
                timings = dict(view.timings)
                if ahead is not None:
                    timings["made in the background"] = ahead
                results[case].append(timings)
    out = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "time": time.strftime("%Y-%m-%d %H:%M"), "cases": {}}
    for case, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out["cases"][case] = {"median_s": med, "runs": runs}
        print(f"{case}: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
