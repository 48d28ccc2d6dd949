"""``workbench neurons``: knowledge neurons of a fact (integrated gradients, Dai et al. 2022)."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import add_model_argument, emit_json


def register(sub) -> None:
    p = sub.add_parser("neurons", help="knowledge neurons for a prompt's answer and their effect")
    p.add_argument("--prompt", required=True)
    p.add_argument("--target", required=True, help="the answer, e.g. Paris")
    p.add_argument("--paraphrase", action="append", default=[], help="another prompt with the same answer (repeatable)")
    p.add_argument("--layers", type=int, nargs="+", help="layers to attribute (default all; each costs a batched pass)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--share", type=float, default=0.7)
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.locate.neurons import knowledge_neurons
    from workbench.core.model import load_model

    model = load_model(args.model)
    r = knowledge_neurons(model, [args.prompt, *args.paraphrase], args.target, steps=args.steps,
                          threshold=args.threshold, share=args.share, layers=args.layers)
    if args.json:
        out = r.to_dict()
        # Per-prompt kept lists and top attributions make the JSON long but are what plots need.
        emit_json(out)
        return 0
    print(f"target {r.target!r} (first token {r.target_token!r}), {len(r.prompts)} prompt(s), layers {r.layers}")
    for p in r.prompts:
        print(f"  p={p.prob:.4g}  kept {len(p.kept):>3}  {p.prompt!r}")
    print(f"  {len(r.neurons)} neuron(s) shared by >= {r.share:.0%} of prompts:")
    for n in r.neurons[:20]:
        print(f"    layer {n.layer:>3} key {n.key:>6}  attribution {n.attribution:.4g}  share {n.share:.0%}")
    if r.effect is not None:
        e = r.effect
        print(f"  p(target): before {e.before:.4g}, suppressed {e.suppressed:.4g}, amplified x2 {e.amplified:.4g}")
    return 0
