"""``workbench knockout``: attention knockout into the last token (Geva et al. 2023), optionally with
the subject's attribute rate over layers."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import add_model_argument, emit_json


def register(sub) -> None:
    p = sub.add_parser("knockout", help="attention knockout: block edges into the last token, per window of layers")
    p.add_argument("--subject", required=True, help="the subject, e.g. 'Eiffel Tower'")
    p.add_argument("--prompt", required=True, help="prompt with {} where the subject goes (or the subject verbatim)")
    p.add_argument("--window", type=int, default=None,
                   help="layers blocked around each layer (default 9, or the model's depth if shallower)")
    p.add_argument("--object", default=None, dest="target",
                   help="the fact's true object (for the attribute rate and a check of the model's answer)")
    p.add_argument("--answer", default=None, help="score this word's first token (default: the model's top-1 answer)")
    p.add_argument("--block-bos", action="store_true",
                   help="let the 'other' group block the leading BOS token too (spared by default: the attention sink)")
    p.add_argument("--enrichment", action="store_true",
                   help="also the attribute rate of the subject's last token over layers")
    p.add_argument("--attributes", default=None,
                   help="comma-separated words that count as attributes (default: the knowledge table's)")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError
    from workbench.locate.enrichment import enrichment
    from workbench.locate.knockout import knockout
    from workbench.core.model import load_model

    # What can be refused without the model is refused before it loads.
    if args.window is not None and args.window < 1:
        raise WorkbenchError(f"--window must be a whole number of layers >= 1, got {args.window}")
    if "{}" not in args.prompt and args.subject not in args.prompt:
        raise WorkbenchError(f"--prompt must contain {{}} or the subject {args.subject!r}")
    attributes = None if args.attributes is None else [a for a in args.attributes.split(",") if a.strip()]
    fact = (args.prompt, args.subject)
    if args.target is not None:
        from workbench.facts import Fact

        template = args.prompt if "{}" in args.prompt else args.prompt.replace(args.subject, "{}", 1)
        fact = Fact(args.subject, template, args.target)
    model = load_model(args.model)
    result = knockout(model, fact, window=args.window, answer=args.answer, spare_bos=not args.block_bos)
    enriched = enrichment(model, fact, attributes=attributes) if args.enrichment else None
    if args.json:
        out = result.to_dict()
        if enriched is not None:
            out["enrichment"] = enriched.to_dict()
        emit_json(out)
        return 0
    print(f"{result.prompt!r} -> {result.answer!r}  p={result.clean_prob:.4g} unblocked; "
          f"window {result.window}  ({result.seconds:.1f} s)")
    for warning in result.warnings:
        print(f"  note: {warning}")
    groups = list(result.changes)
    print("\n  layer  window   " + "".join(f"{g:>10}" for g in groups) + "   (% change in p)")
    for i, layer in enumerate(result.layers):
        lo, hi = result.windows[i]
        cells = "".join(f"{100 * result.changes[g][i]:>9.1f}%" for g in groups)
        print(f"  {layer:>5}  {lo:>2}-{hi - 1:<3}   {cells}")
    if enriched is not None:
        print(f"\nattribute rate at {enriched.tokens[enriched.position]!r} (top {enriched.top_k} tokens), "
              f"attributes: {', '.join(enriched.attributes) or 'none known'}")
        for layer, rate, hits in zip(enriched.layers, enriched.rate, enriched.hits):
            print(f"  layer {layer:>3}  {100 * rate:5.1f}%  {' '.join(repr(h) for h in hits)}")
    return 0
