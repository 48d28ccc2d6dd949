"""The int8 screen against the float32 unembedding, in the two places it serves, alternated in one process.

- six letters (the letter test's three prompts, two samples each, 60 tokens, top-5 sampling);
- the critics' greedy answers for one fact (its edit prompt, paraphrases, neighbour prompts,
  question and CounterFact+ prompts, 10 tokens each), own loop against Hugging Face's greedy
  ``generate`` (which takes the full float32 product at every step).

Each pair is checked to give the same texts. Where the CPU has native bfloat16 the screen is not
used by default; ``WORKBENCH_BF16=0`` measures the path a laptop takes.

Usage::

    python benchmarks/screen_speed.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("WORKBENCH_PROGRESS", "0")


def main(argv=None) -> int:
    import torch
    from lesson_clicks import cpu_line

    import workbench as wb
    from workbench.evaluation.generated import _answer_items
    from workbench.evaluation.relations import letter_prompts
    from workbench.facts import ASSETS, read_facts
    from workbench.probing import generate_many
    from workbench.runtime.unembed import MixedUnembed, pays_off
    from workbench.ui.knowledge import sample_prompts

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    model = wb.load_model()
    if pays_off(model):
        print("this CPU has native bfloat16: the screen is not what it uses (set WORKBENCH_BF16=0)")
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    letters = sample_prompts(letter_prompts(fact))
    known = read_facts(ASSETS / "known_facts.json")[0]
    answers = [p for _, p in _answer_items(known, ("teacher", "generation", "question", "plus"))]

    def screened(on: bool) -> None:
        os.environ["WORKBENCH_INT8_SCREEN"] = "1" if on else "0"

    cases = {
        "six letters": lambda on: (screened(on), generate_many(model, letters, max_new_tokens=60, do_sample=True,
                                                               top_k=5, seed=0))[1],
        f"{len(answers)} greedy answers": lambda on: (screened(on), generate_many(model, answers, max_new_tokens=10,
                                                                                    fast=on))[1],
    }
    t = time.perf_counter()
    screened(True)
    MixedUnembed(model).top_logits(model.hidden(model.tokens(letters[0]))[0, -1:].float(), 1)
    build = time.perf_counter() - t
    seconds = {name: {"int8 screen": [], "float32": []} for name in cases}
    same = {}
    for _ in range(args.repeats):
        for name, run in cases.items():
            texts = {}
            for label, on in (("int8 screen", True), ("float32", False)):
                start = time.perf_counter()
                texts[label] = run(on)
                seconds[name][label].append(time.perf_counter() - start)
            same[name] = texts["int8 screen"] == texts["float32"]
    os.environ.pop("WORKBENCH_INT8_SCREEN", None)
    med = {name: {k: statistics.median(v) for k, v in d.items()} for name, d in seconds.items()}
    out = {"cpu": cpu_line(), "torch_threads": torch.get_num_threads(), "load_1min": os.getloadavg()[0],
           "time": time.strftime("%Y-%m-%d %H:%M"), "first_build_s": build, "median_s": med,
           "ratio": {n: m["float32"] / m["int8 screen"] for n, m in med.items()}, "same_texts": same, "runs": seconds}
    print(out["cpu"], f"threads {out['torch_threads']}, load {out['load_1min']:.1f}")
    print(f"first use (quantise and pack the unembedding): {build:.1f} s")
    for name, m in med.items():
        print(f"{name}: int8 screen {m['int8 screen']:.2f} s, float32 {m['float32']:.2f} s, "
              f"{out['ratio'][name]:.2f}x, same texts: {same[name]}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
