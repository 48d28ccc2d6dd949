"""``workbench memories``: the largest FFN sub-updates at one layer and position."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import add_model_argument, emit_json


def register(sub) -> None:
    p = sub.add_parser("memories", help="FFN sub-updates m_i v_i at a layer and what they promote")
    p.add_argument("--prompt", required=True)
    p.add_argument("--layer", type=int, required=True, help="FFN layer (negative counts from the end)")
    p.add_argument("--position", type=int, default=-1, help="token position (default: last)")
    p.add_argument("--top-k", type=int, default=20, help="sub-updates to list")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def _tokens(scores, n: int = 5) -> str:
    return " ".join(repr(t.token) for t in scores[:n])


def run(args: argparse.Namespace) -> int:
    from workbench.locate.memories import memories
    from workbench.core.model import load_model

    model = load_model(args.model)
    r = memories(model, args.prompt, layer=args.layer, position=args.position, top_k=args.top_k)
    if args.json:
        emit_json(r.to_dict())
        return 0
    print(f"{r.prompt!r}  layer {r.layer}, position {r.position} ({r.token!r})")
    print(f"  ||FFN out|| = {r.ffn_norm:.3f}; listed sub-updates carry {r.top_weight_share:.1%} of sum |m_i| ||v_i||")
    print(f"  lens before: {_tokens(r.lens_before)}")
    print(f"  lens after:  {_tokens(r.lens_after)}")
    print(f"  FFN promotes: {_tokens(r.ffn_promotes)}")
    print(f"  {'key':>6} {'m_i':>9} {'||v_i||':>8} {'weight':>8}  promotes")
    for u in r.sub_updates:
        print(f"  {u.key:>6} {u.coefficient:>9.3f} {u.value_norm:>8.3f} {u.weight:>8.3f}  {_tokens(u.promotes)}")
    return 0
