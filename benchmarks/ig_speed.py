"""Integrated gradients: the last-position run against the full forward, in one process.

For the first N bundled facts, the attributions of the KN editor's search (the
prompt and its paraphrases, the upper half of the layers) computed both ways,
interleaved per fact so load on the machine hits both alike. Prints seconds per
fact each way, their ratio, and the largest attribution difference relative to
the largest attribution (the two are the same computation).

Usage (alone, or say what ran beside it):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ig_speed.py --facts 4
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("WORKBENCH_PROGRESS", "0")


def main(argv: list[str] | None = None) -> dict:
    import torch

    import workbench as wb
    from workbench.locate.blocks import BlockRunner
    from workbench.locate.ffn import key_coefficients
    from workbench.locate.lens import check_prompt
    from workbench.locate.neurons import integrated_gradients

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=wb.DEFAULT_MODEL)
    ap.add_argument("--facts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    model = wb.load_model(args.model)
    layers = list(range(model.n_layers // 2, model.n_layers))
    facts = [f for f in wb.bundled_facts() if f.target_true][: args.facts]
    seconds = {"full_forward": 0.0, "last_position": 0.0}
    worst = 0.0
    for fact in facts:
        for prompt in [fact.text, *fact.paraphrase_prompts]:
            tokens = check_prompt(model, prompt)
            coeffs = {l: c[-1] for l, c in key_coefficients(model, tokens, layers).items()}
            t = time.perf_counter()
            full = [integrated_gradients(model, prompt, fact.target_true, layer=l, steps=args.steps,
                                         coefficients=coeffs[l], full_forward=True) for l in layers]
            seconds["full_forward"] += time.perf_counter() - t
            t = time.perf_counter()
            runner = BlockRunner(model, tokens)  # counted: knowledge_neurons builds one per prompt
            fast = [integrated_gradients(model, prompt, fact.target_true, layer=l, steps=args.steps,
                                         coefficients=coeffs[l], runner=runner) for l in layers]
            seconds["last_position"] += time.perf_counter() - t
            a, b = torch.stack([r.attributions for r in full]), torch.stack([r.attributions for r in fast])
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
    out = {
        "model": model.name, "facts": len(facts), "layers": layers, "steps": args.steps,
        "threads": torch.get_num_threads(),
        "seconds_per_fact": {k: round(v / len(facts), 3) for k, v in seconds.items()},
        "speedup": round(seconds["full_forward"] / seconds["last_position"], 2),
        "max_relative_difference": worst,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
