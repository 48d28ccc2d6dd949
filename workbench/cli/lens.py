"""``workbench lens``: logit lens over layers and positions, optionally following a token."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import add_model_argument, emit_json


def register(sub) -> None:
    p = sub.add_parser("lens", help="top tokens of the residual stream after every layer (logit lens)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--watch", help="a token whose probability and rank to follow across layers")
    p.add_argument("--top-k", type=int, default=5)
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.checks import top_k
    from workbench.locate.lens import lens
    from workbench.model import load_model

    top_k(args.top_k, name="--top-k")  # before the model loads
    model = load_model(args.model)
    r = lens(model, args.prompt, watch=args.watch, top_k=args.top_k)
    if args.json:
        emit_json(r.to_dict())
        return 0
    print(f"{r.prompt!r}: top token after each layer at the last position ({r.tokens[-1]!r})")
    for layer, per_pos in enumerate(r.top):
        top = per_pos[-1][0]
        line = f"  layer {layer:>3}  {top.token!r:<20} p={top.score:.3f}"
        if r.watch is not None:
            line += f"   {r.watch!r}: p={r.watch_prob[layer][-1]:.4f} rank={r.watch_rank[layer]}"
        print(line)
    return 0
