"""``workbench evaluate``: score an editing method over a dataset (JSON summary out)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from workbench.cli.arguments import add_model_argument, check_value, emit_json, json_text, parse_workers


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate an editing method on a dataset of facts")
    p.add_argument("--method", required=True, help="editing method (see `workbench methods`)")
    p.add_argument("--dataset", required=True, help="facts: CounterFact, EasyEdit, known_1000 or workbench JSON")
    p.add_argument("--mode", default="independent", choices=["independent", "sequential", "batch"])
    p.add_argument("--limit", type=int, default=None, help="at most N facts the model knows")
    p.add_argument("--include-unknown", action="store_true",
                   help="edit every fact, also those the unedited model gets wrong (default: only known facts)")
    p.add_argument("--every", type=int, default=10, help="curve point / drift sample every N facts")
    p.add_argument("--batch-size", type=int, default=1, metavar="K",
                   help="sequential mode: K facts per edit call, batches kept one after another (AlphaEdit: 100)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layers to edit (method default if omitted)")
    p.add_argument("--perplexity-texts", type=int, default=10)
    p.add_argument("--fluency-tokens", type=int, default=40)
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new edit after this many seconds; the report covers the facts done")
    p.add_argument("--metrics", default="teacher,generation,question,plus", metavar="LIST",
                   help="comma-separated measures: teacher (always on), generation (greedy answers judged), "
                        "question (the fact as a question), plus (CounterFact+: edit statement before neighbours, "
                        "NKL), letter (sampled free text; slow). Default: all but letter")
    p.add_argument("--workers", default="1", metavar="N",
                   help="independent mode: run the facts on N Ray workers, each with its own model "
                        "('auto': one per CPU); needs the cluster extra (pip install -e '.[cluster]')")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --workers: a running Ray cluster ('auto' or ray://host:port); "
                        "default: a local Ray started for the run")
    p.add_argument("--keep", action="store_true", help="sequential/batch: do not revert at the end (no effect on the CLI's process)")
    add_model_argument(p)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write the summary as JSON to OUT (or stdout with no OUT)")
    p.add_argument("--report", default=None, metavar="PATH", help="write the full report (per-fact rows, curve) as JSON")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="independent mode: go on from the --report a stopped run wrote (same arguments; "
                        "--report may name the same file)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --report and --json replace existing files (never the dataset)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError
    from workbench.evaluation import EvaluationInterrupted, evaluate, read_report
    from workbench.evaluation.generated import check_metrics
    from workbench.facts import read_facts
    from workbench.core.model import load_model
    from workbench.runtime.outputs import check_output

    if args.limit is not None:
        check_value("evaluate", "limit", args.limit)
    # Read (and validate) the data and the output paths before the model load: bad input
    # fails in a second, not after the run. The dataset and the report a resumed run goes
    # on from are never replaced by accident; --resume R --report R writes R again.
    outputs = dict(inputs=[args.dataset], overwrite=args.overwrite)
    report_path = check_output(args.report, "--report", replaceable=[args.resume], **outputs)
    json_path = check_output(args.json, "--json", **outputs)
    if report_path is not None and report_path == json_path:
        raise WorkbenchError("--report and --json name the same file; give them two (nothing was run)")
    metrics = check_metrics(args.metrics)
    workers = parse_workers(args.workers)
    if args.address is not None and workers == 1:
        raise WorkbenchError("--address needs --workers N (N > 1, or auto): one worker runs here, not on a cluster")
    facts = read_facts(args.dataset)
    earlier = read_report(args.resume) if args.resume else None
    model = load_model(args.model)
    kwargs = {"layers": args.layers} if args.layers else {}

    def on_term(signum, frame):
        # SIGTERM (kill, a job scheduler, a shell's background job, where SIGINT is
        # ignored) and SIGHUP (the terminal closed) stop the run like Ctrl-C: the facts
        # done are written, --resume goes on.
        raise KeyboardInterrupt

    stops = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, on_term) for sig in stops}
    try:
        report = evaluate(
            model, facts, method=args.method, mode=args.mode, limit=args.limit, every=args.every,
            revert=not args.keep, perplexity_texts=args.perplexity_texts, fluency_tokens=args.fluency_tokens,
            time_limit=args.time_limit, resume=earlier, metrics=metrics, workers=workers, address=args.address,
            batch_size=args.batch_size, known_only=not args.include_unknown, **kwargs,
        )
    except EvaluationInterrupted as stop:
        # Ctrl-C: write what was finished, so that nothing done is lost and --resume can go on.
        n = stop.report.summary["n"]
        if args.report:
            failures: list[str] = []
            where = _write(report_path, stop.report.to_json(indent=1), "--report", failures)
            said = failures[0] if failures else f"the partial report is in {where}"
            resume = f"; go on with --resume {where}" if args.mode == "independent" and where else ""
            print(f"workbench evaluate: interrupted after {n} facts; {said}{resume}", file=sys.stderr)
        else:
            print(f"workbench evaluate: interrupted after {n} facts (give --report PATH to keep them)", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # The run is done: a file that cannot be written now is kept elsewhere, and said so at the end.
    failures = []
    if args.report:
        _write(report_path, report.to_json(indent=1), "--report", failures)
    summary = report.to_dict()["summary"]
    failed = [r for r in report.rows if r.error is not None]
    if report.rows and len(failed) == len(report.rows):
        raise WorkbenchError("; ".join([f"every one of the {len(failed)} edits failed; the first: {failed[0].error}",
                                        *failures]))
    if args.json == "-":
        emit_json(summary)
    elif args.json:
        _write(json_path, json_text(summary, indent=1) + "\n", "--json", failures)
    if args.json != "-":
        ivs, counts = summary.get("intervals") or {}, summary.get("counts") or {}
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            if key in ("intervals", "counts") or value is None:
                continue  # in --json (None: not measured); intervals and counts printed beside their rates
            text = f"{value:.4g}" if isinstance(value, float) else f"{value}"
            if key in ivs:
                text += f"  [{ivs[key][0]:.3g}, {ivs[key][1]:.3g}]"
            if key in counts:
                text += f"  n={counts[key]}"
            print(f"{key:<{width}} {text}")
    if failures:
        raise WorkbenchError("; ".join(failures))
    return 0


def _write(path: Path, text: str, what: str, failures: list[str]) -> str:
    """Write an output file atomically (a reader never sees half of it). Where that fails,
    its message (with the fallback file that holds the text) is added to ``failures``.
    Returns where the text is ("" if nowhere)."""
    from workbench.runtime.outputs import OutputNotWritten, write_output

    try:
        return str(write_output(path, text, what))
    except OutputNotWritten as exc:
        failures.append(str(exc))
        return "" if exc.kept is None else str(exc.kept)
