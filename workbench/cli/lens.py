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


def refuse_non_finite(r) -> None:
    """Refuse a lens whose probabilities are not finite, naming the first layer and position.

    NaN is no reading: the JSON would carry it as ``null`` and the table as ``nan``, both
    looking like an answer. It comes from a residual stream that is not finite (an edit
    that broke the model, weights gone bad in memory).
    """
    import math

    from workbench.errors import WorkbenchError

    for layer, per_pos in enumerate(r.top):
        for pos, tops in enumerate(per_pos):
            scores = [t.score for t in tops] + ([r.watch_prob[layer][pos]] if r.watch_prob else [])
            if not all(math.isfinite(x) for x in scores):
                raise WorkbenchError(
                    f"the logit lens is not finite (NaN or infinity) after layer {layer} at position {pos} "
                    f"({r.tokens[pos]!r}): the model's residual stream there is broken (an edit that broke it, "
                    "or corrupt weights); nothing is printed"
                )


def run(args: argparse.Namespace) -> int:
    from workbench.checks import top_k
    from workbench.locate.lens import lens
    from workbench.core.model import load_model

    top_k(args.top_k, name="--top-k")  # before the model loads
    model = load_model(args.model)
    r = lens(model, args.prompt, watch=args.watch, top_k=args.top_k)
    refuse_non_finite(r)
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
