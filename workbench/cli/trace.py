"""``workbench trace``: causal tracing of one fact (where is it recalled?)."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import add_model_argument, emit_json

#: The CLI's JSON contract (the library result holds more).
# "warnings" too: a JSON reader must learn what a person reading the table is told.
JSON_KEYS = ("tokens", "subject_range", "answer", "clean_prob", "corrupted_prob", "scores", "seconds", "warnings",
             "method")


def register(sub) -> None:
    from workbench.locate.cells import KINDS
    from workbench.locate.trace_settings import TraceSettings
    from workbench.locate.tracing import TRACE_ALGORITHMS

    defaults = TraceSettings()  # the library's defaults are the CLI's
    p = sub.add_parser("trace", help="causal tracing: restore clean states into subject-corrupted runs")
    p.add_argument("--subject", required=True, help="the words to corrupt, e.g. 'Eiffel Tower'")
    p.add_argument("--prompt", required=True, help="prompt with {} where the subject goes (or the subject verbatim)")
    p.add_argument("--kind", default="all", choices=["all", *KINDS])
    p.add_argument("--samples", type=int, default=defaults.samples, help=f"noisy copies (default {defaults.samples})")
    p.add_argument("--noise", type=float, default=defaults.noise,
                   help=f"noise in units of the subject-embedding std (default {defaults.noise:g})")
    p.add_argument("--window", type=int, default=defaults.window,
                   help=f"layers restored around each layer for mlp/attn (default {defaults.window})")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--method", default="exact", choices=list(TRACE_ALGORITHMS),
                   help="exact (restore and rerun, default) or attribution (first-order preview, one backward pass)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="compute the exact trace even if the trace cache holds it (and keep it out of the cache)")
    p.add_argument("--answer", default=None, help="trace this word's first token (default: the model's top-1 answer)")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError
    from workbench.locate.trace_settings import TraceSettings
    from workbench.locate.tracing import trace
    from workbench.core.model import load_model

    if args.samples < 1:
        raise WorkbenchError("--samples must be >= 1")
    if args.window < 1:
        raise WorkbenchError("--window must be >= 1")
    if "{}" not in args.prompt and args.subject not in args.prompt:
        raise WorkbenchError(f"--prompt must contain {{}} or the subject {args.subject!r}")
    # Checked here, before the model loads.
    settings = TraceSettings(kinds=args.kind, samples=args.samples, noise=args.noise, window=args.window,
                             seed=args.seed, answer=args.answer)
    model = load_model(args.model)
    # The trace cache as in the app: an unedited model's exact trace of these settings answers at once.
    result = trace(model, (args.prompt, args.subject), settings=settings, method=args.method, cache=args.cache)
    d = result.to_dict()
    if args.json:
        emit_json({k: d[k] for k in JSON_KEYS})
        return 0
    if result.method == "attribution":
        print("attribution patching: a first-order estimate of the trace (one forward and one backward pass)")
    print(f"{result.prompt!r} -> {result.answer!r}  clean p={result.clean_prob:.4g}  "
          f"corrupted p={result.corrupted_prob:.4g}  ({result.seconds:.1f} s)")
    start, end = result.subject_range
    for kind in settings.kinds:
        grid = result.scores[kind]
        print(f"\n{kind}: best layer per token (p after restoring)")
        for t, tok in enumerate(result.tokens):
            layer = int(grid[t].argmax())
            mark = "*" if start <= t < end else " "
            bar = "#" * int(round(20 * max(0.0, grid[t, layer] - result.corrupted_prob)
                                  / max(1e-9, result.clean_prob - result.corrupted_prob)))
            print(f"  {mark}{tok!r:<16} layer {layer:>3}  p={grid[t, layer]:.4g}  {bar}")
    for w in result.warnings:
        print(f"warning: {w}")
    return 0
