"""Six letters (the letter test's three prompts, two samples each, 60 tokens, top-5) with the
batched own sampling loop against Hugging Face's ``generate``, alternated in one process so
that both meet the same load: the median seconds of each and their ratio. Both draw the same
texts for a seed (``tests/test_generate.py``); the script checks it on every repeat too.

Usage::

    python benchmarks/letter_sampling_speed.py [--repeats 3] [--json out.json]
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
    from workbench.evaluation.relations import letter_prompts
    from workbench.runtime.unembed import pays_off
    from workbench.ui.knowledge import generate_letters, sample_prompts

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    model = wb.load_model()
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    prompts = sample_prompts(letter_prompts(fact))
    generate_letters(model, prompts[:2])  # warm: bfloat16 copies, stop set
    seconds: dict[str, list[float]] = {"own loop": [], "hf generate": []}
    for _ in range(args.repeats):
        texts = {}
        for name, fast in (("own loop", True), ("hf generate", False)):
            start = time.perf_counter()
            texts[name] = wb.probing.generate_many(model, prompts, max_new_tokens=60, do_sample=True, top_k=5,
                                                   seed=0, fast=fast)
            seconds[name].append(time.perf_counter() - start)
        same = texts["own loop"] == texts["hf generate"]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    out = {"cpu": cpu_line(), "bf16_candidates": pays_off(model), "torch_threads": torch.get_num_threads(),
           "load_1min": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M"), "median_s": med,
           "ratio": med["hf generate"] / med["own loop"], "same_texts": same, "runs": seconds}
    print(out["cpu"], f"threads {out['torch_threads']}, load {out['load_1min']:.1f}")
    print(f"six letters: own loop {med['own loop']:.2f} s, HF generate {med['hf generate']:.2f} s, "
          f"ratio {out['ratio']:.2f}x, same texts: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
