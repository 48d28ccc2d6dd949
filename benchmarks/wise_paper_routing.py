"""Where WISE as published sends inputs after n sequential edits: which prompts read the side
memory, and what the authors' long-input rule does to held-out text.

Edits the first ``--edits`` records of the shared CounterFact file one after another with
``wise-paper``, then reports for the edit prompts, their paraphrases, their neighbours and the
held-out perplexity texts: the share routed to a side memory, and the held-out perplexity, both
under the code's rule (inputs over 100 positions are scored by their largest position) and with
every input scored by its mean.

Usage::

    WORKBENCH_THREADS=1 python benchmarks/wise_paper_routing.py --edits 10

Writes ``assets/results/wise_paper_routing.json`` (not beside the curves: every JSON there is a report).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "assets" / "results" / "wise_paper_routing.json"
DATASET = ROOT.parent / "shared" / "data" / "counterfact-edit-1k.json"


def routed_share(model, texts: list[str], *, max_tokens: int | None = None) -> float:
    """Share of ``texts`` that read a side memory (one forward pass each, the router's own verdict)."""
    from workbench.editing.wise_paper import WisePaperEdit

    first = next(e for e in model.prompt_edits if isinstance(e, WisePaperEdit))
    seen = []

    def spy(module, args, output):
        inputs = args[0]
        memories = first.memories((output.shape[-1], inputs.shape[-1]))
        base = output.detach().float()
        best = first.scores(inputs, base, memories[-1].delta, None)
        hit = best >= memories[-1].threshold
        for mem in memories[:-1]:
            hit |= first.scores(inputs, base, mem.delta, None) > mem.threshold
        seen.append(bool(hit.any()))

    h = WisePaperEdit.module(model, first.layer).register_forward_hook(spy)
    try:
        with torch.no_grad():
            for text in texts:
                ids = model.encode(model.contextualize(text))[: max_tokens or None]
                model.hidden(torch.tensor([ids], device=model.device))
    finally:
        h.remove()
    return sum(seen) / len(seen) if seen else float("nan")


def main() -> int:
    import workbench as wb
    from workbench.corpus import wiki_texts
    from workbench.editing import wise_paper
    from workbench.evaluation import perplexity

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--edits", type=int, default=10)
    p.add_argument("--texts", type=int, default=10)
    args = p.parse_args()
    model = wb.load_model("gemma-3-270m")
    facts = wb.read_facts(str(DATASET))[: args.edits]
    ppl_before = perplexity(model, n_texts=args.texts)
    start = time.perf_counter()
    handles = [wb.edit(model, f, method="wise-paper", min_prob=0) for f in facts]
    seconds = (time.perf_counter() - start) / len(facts)
    heldout = wiki_texts("heldout", limit=args.texts)
    groups = {"edit prompts": [f.text for f in facts],
              "paraphrases": [p for f in facts for p in f.paraphrase_prompts],
              "neighbours": [p for f in facts for p in f.neighborhood_prompts],
              "held-out texts (128 tokens)": heldout}
    out = {"edits": len(facts), "seconds_per_edit": seconds, "perplexity_before": ppl_before,
           "thresholds": [m.threshold for m in handles[0].prompt_edit.memories(
               tuple(wise_paper.WisePaperEdit.module(model, handles[0].prompt_edit.layer).weight.shape))],
           "in_scope": [h.info["in_scope"] for h in handles], "out_scope": [h.info["out_scope"] for h in handles]}
    memory = handles[0].prompt_edit  # the first edit's settings are the memory's
    for rule, long_input in (("code: largest position over 100 positions", wise_paper.LONG_INPUT),
                             ("mean over every input", 0)):
        memory.settings["long_input"] = long_input
        out[rule] = {"perplexity": perplexity(model, n_texts=args.texts),
                     **{f"routed, {k}": routed_share(model, v, max_tokens=128) for k, v in groups.items()}}
    memory.settings["long_input"] = wise_paper.LONG_INPUT
    for h in reversed(handles):
        h.revert()
    out["command"] = "python benchmarks/wise_paper_routing.py " + " ".join(sys.argv[1:])
    OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
