"""``workbench probe``: top next tokens and target probabilities of prompts."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import add_model_argument, emit_json


def register(sub) -> None:
    p = sub.add_parser("probe", help="top next tokens and target probabilities")
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    p.add_argument("--target", action="append", default=[], help="target continuation (repeatable)")
    p.add_argument("--top-k", type=int, default=5)
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.core.model import load_model
    from workbench.probing import probe

    from workbench.checks import top_k

    top_k(args.top_k, name="--top-k", low=0)  # before the model loads
    model = load_model(args.model)
    result = probe(model, args.prompts, targets=args.target or None, top_k=args.top_k)
    if args.json:
        emit_json(result.to_dict())
        return 0
    for p in result.prompts:
        print(p.prompt)
        for t in p.top:
            print(f"    {t.token!r:<24} {t.prob:8.4f}")
        for t in p.targets:
            print(f"    target {t.target!r:<17} p={t.prob:.4g}  mean logp={t.logprob:.3f}")
    return 0
