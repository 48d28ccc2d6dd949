"""``workbench evaluate``: score an editing method over a dataset (JSON summary out)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.cli.arguments import add_model_argument, emit_json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate an editing method on a dataset of facts")
    p.add_argument("--method", required=True, help="editing method (rome, memit, pmet, kn, ft, in-context, retrieval)")
    p.add_argument("--dataset", required=True, help="facts: CounterFact, EasyEdit, known_1000 or workbench JSON")
    p.add_argument("--mode", default="independent", choices=["independent", "sequential", "batch"])
    p.add_argument("--limit", type=int, default=None, help="at most N facts the model knows")
    p.add_argument("--every", type=int, default=10, help="curve point / drift sample every N facts")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layers to edit (method default if omitted)")
    p.add_argument("--perplexity-texts", type=int, default=10)
    p.add_argument("--fluency-tokens", type=int, default=40)
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new edit after this many seconds; the report covers the facts done")
    p.add_argument("--keep", action="store_true", help="sequential/batch: do not revert at the end (no effect on the CLI's process)")
    add_model_argument(p)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write the summary as JSON to OUT (or stdout with no OUT)")
    p.add_argument("--report", default=None, metavar="PATH", help="write the full report (per-fact rows, curve) as JSON")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="independent mode: go on from the --report a stopped run wrote (same arguments)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError
    from workbench.evaluation import evaluate, read_report
    from workbench.facts import read_facts
    from workbench.model import load_model

    if args.limit is not None and args.limit < 1:
        raise WorkbenchError("--limit must be >= 1")
    # Read (and validate) the data before the model load: bad input fails in a second.
    facts = read_facts(args.dataset)
    earlier = read_report(args.resume) if args.resume else None
    model = load_model(args.model)
    kwargs = {"layers": args.layers} if args.layers else {}
    report = evaluate(
        model, facts, method=args.method, mode=args.mode, limit=args.limit, every=args.every,
        revert=not args.keep, perplexity_texts=args.perplexity_texts, fluency_tokens=args.fluency_tokens,
        time_limit=args.time_limit, resume=earlier, **kwargs,
    )
    if args.report:
        report.to_json(args.report, indent=1)
    summary = report.to_dict()["summary"]
    if args.json == "-":
        emit_json(summary)
    elif args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.json != "-":
        for key, value in summary.items():
            print(f"{key:<28} {value:.4g}" if isinstance(value, float) else f"{key:<28} {value}")
    return 0
