"""Is the damage of many sequential edits done at the BOS position? A test on a finished run.

Gemma's BOS position is an attention sink: every later position reads it. After AlphaEdit's
and MEMIT's batches, how far each update moves the edited layers' output at BOS grows batch by
batch (``handle.info["diagnostics"]``), and held-out perplexity grows with it. This script loads
a sequential run's checkpoint (the weights after all its edits) and measures, in one process:

- the unedited model, and the edited one as the run left it;
- the edit taken out at BOS only: each edited FFN's output at BOS positions computed with its
  unedited weights (BOS attends to itself alone, so its whole column is then the unedited one);
- the edit kept at BOS only: unedited weights at every other position.

For each: held-out perplexity (the run's texts and length) and ES / PS / NS (teacher-forced) on
the first ``--facts`` edited facts; with ``--per-layer``, also each edited layer's update taken
out alone (at every position). If taking the edit out at BOS brings perplexity back while
ES stays, the collapse runs through the sink, and an editor that leaves BOS's output alone
should avoid it.

Usage::

    python benchmarks/bos_restore.py --run alphaedit-paper_b100 [--facts 200] [--per-layer] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact-edit-1k.json"


@contextlib.contextmanager
def bos_split(model, original: dict, *, unedited_at_bos: bool):
    """Forward hooks on the edited FFN output matrices: BOS positions (or all others) computed
    with the unedited weights."""
    import torch
    import torch.nn.functional as F

    modules = dict(model.hf_model.named_modules())
    embed = model.hf_model.get_input_embeddings()
    bos = model.tokenizer.bos_token_id
    mask: dict = {}

    def note_ids(_module, args):
        mask["bos"] = args[0] == bos

    def split(module, args, output, name):
        at = mask["bos"]
        if not unedited_at_bos:
            at = ~at
        if at.shape != output.shape[:-1] or not at.any():
            return output
        out = output.clone()
        out[at] = F.linear(args[0][at], original[name])
        return out

    handles = [embed.register_forward_pre_hook(note_ids)]
    for name in original:
        module = modules[name.removesuffix(".weight")]
        handles.append(module.register_forward_hook(lambda m, a, o, name=name: split(m, a, o, name)))
    try:
        with torch.no_grad():
            yield
    finally:
        for h in handles:
            h.remove()


def _layer(name: str) -> int:
    return int(name.split("layers.")[1].split(".")[0])


def main(argv=None) -> int:
    import torch
    from safetensors.torch import load_file

    import workbench as wb
    from workbench.evaluation.perplexity import perplexity
    from workbench.evaluation.report import rates
    from workbench.evaluation.scores import score_facts
    from workbench.runtime.cache import cache_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="alphaedit-paper_b100", help="a folder under $WORKBENCH_CACHE/sequential/")
    ap.add_argument("--facts", type=int, default=200)
    ap.add_argument("--per-layer", action="store_true", help="also each edited layer's update taken out alone")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    folder = cache_dir("sequential", args.run)
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    model = wb.load_model()
    if state["fingerprint"] != model.fingerprint:
        raise SystemExit(f"the checkpoint is of weights {state['fingerprint']}, the model's are {model.fingerprint}")
    settings = state["settings"]
    ppl_kw = dict(n_texts=settings.get("perplexity_texts", 10), max_tokens=settings.get("perplexity_tokens", 128))
    params = dict(model.hf_model.named_parameters(remove_duplicate=False))
    edited = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    original = {name: params[name].detach().clone() for name in edited}
    by_key = {(f.subject, f.prompt, f.target_new): f for f in wb.read_facts(DATASET)}
    facts = [by_key[(r["subject"], r["prompt"], r["target_new"])] for r in state["rows"][: args.facts]]

    def measure(label: str) -> dict:
        t0 = time.perf_counter()
        ppl = perplexity(model, **ppl_kw)
        scored = rates([s.metrics() for s in score_facts(model, facts, metrics=("teacher",))])
        row = {"condition": label, "perplexity": ppl,
               **{k: scored.get(k) for k in ("efficacy_score", "paraphrase_score", "neighborhood_score")},
               "seconds": time.perf_counter() - t0}
        print(f"{label:<34} perplexity {ppl:10.1f}   ES {100 * row['efficacy_score']:.1f}   "
              f"PS {100 * row['paraphrase_score']:.1f}   NS {100 * row['neighborhood_score']:.1f}", flush=True)
        return row

    out = [measure("unedited")]
    with torch.no_grad():
        for name, value in edited.items():
            params[name].copy_(value)
    try:
        out.append(measure(f"after {state['reached']} edits"))
        with bos_split(model, original, unedited_at_bos=True):
            out.append(measure("edit taken out at BOS"))
        with bos_split(model, original, unedited_at_bos=False):
            out.append(measure("edit kept at BOS only"))
        if args.per_layer:
            # Which layer's update does the damage: each layer's taken out alone, at every position.
            for name in edited:
                with torch.no_grad():
                    params[name].copy_(original[name])
                out.append(measure(f"edit taken out at layer {_layer(name)}"))
                with torch.no_grad():
                    params[name].copy_(edited[name])
    finally:
        with torch.no_grad():
            for name, value in original.items():
                params[name].copy_(value)
    curve = state["curve"][-1]
    meta = {"command": "python " + " ".join(["benchmarks/bos_restore.py", *(argv or sys.argv[1:])]),
            "run": args.run, "method": state["method"], "edits": state["reached"], "facts": len(facts),
            "edited": sorted(edited), "curve_last_point": {k: curve.get(k) for k in ("n_edits", "perplexity")},
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "conditions": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
