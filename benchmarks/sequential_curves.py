"""Sequential-editing curves on the shared CounterFact records: one JSON per method, one figure.

Every record is edited, known or not (as sequential-editing papers do; the report
says how many the model knew), ``--batch-size`` facts per edit call, a curve point
(ES / PS / NS teacher-forced over every fact edited so far, held-out perplexity,
fluency) every ``--every`` edits. A run stops starting edits after ``--time-limit``
seconds (or at SIGTERM / Ctrl-C) and writes every point measured. Weight editors and the
memories in the forward pass (GRACE, WISE) keep their state after each point in
``$WORKBENCH_CACHE/sequential/<file name>/``: the same
command run again goes on from the last point (``--fresh`` starts over). The weight editors'
target searches are also kept, about 10 KB a fact, in
``assets/results/sequential_1k/[<subdir>/]journals/`` (``workbench.editing.journal``): committed,
they let the same command on another machine replay the edits made so far without searching
(minutes, not hours) and go on from there; ``--no-journal`` leaves them out. Prints, per
method, the last point and the collapse point (the first point where held-out
perplexity has doubled).

Usage::

    WORKBENCH_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/sequential_curves.py \\
        --methods grace --limit 1000 --every 100 --time-limit 2400
    python benchmarks/sequential_curves.py --methods alphaedit memit --batch-size 10 --limit 100 --every 10 \
        --hparams '{"n_prefixes": 2, "steps": 15}' --tag fast      # the weight editors, shorter on a CPU
    python benchmarks/sequential_curves.py --methods memit-kept --batch-size 100 --stop-after 300
        # the first 300 of the 1,000-edit run, its point at 300 scored as the whole run's will be
    python benchmarks/sequential_curves.py --figure-only      # redraw from assets/results/sequential_1k/

Writes ``assets/results/sequential_1k/[<subdir>/]<method>[_b<k>][_<tag>].json`` and
``sequential_1k.html`` (the runs outside subfolders) in the same folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "results" / "sequential_1k"
DATASET = ROOT.parent / "shared" / "data" / "counterfact-edit-1k.json"


def collapse_point(curve: list[dict]) -> int | None:
    """Edits at the first curve point whose perplexity is at least twice the unedited one (None: never)."""
    if not curve or curve[0].get("perplexity") is None:
        return None
    base = curve[0]["perplexity"]
    return next((p["n_edits"] for p in curve[1:] if p.get("perplexity") is not None and p["perplexity"] >= 2 * base),
                None)


def _stop_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) stop the run as Ctrl-C does: the points measured are written."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def run(method: str, args) -> Path:
    import workbench as wb
    from workbench.editing import method_spec
    from workbench.editing.journal import search_journal
    from workbench.evaluation import evaluate
    from workbench.evaluation.report import EvaluationInterrupted
    from workbench.facts import knows
    from workbench.runtime.cache import cache_root

    tag = (f"_b{args.batch_size}" if args.batch_size > 1 else "") + (f"_{args.tag}" if args.tag else "")
    checkpoint = None
    if method_spec(method).kind != "prompt":  # the prompt baselines are fast enough to run again
        checkpoint = cache_root() / "sequential" / f"{method}{tag}"
        if args.fresh and checkpoint.exists():
            shutil.rmtree(checkpoint)
    model = wb.load_model(args.model)
    facts = wb.read_facts(args.dataset)[: args.limit]
    known = sum(knows(model, facts))
    folder = OUT / args.subdir if args.subdir else OUT
    journal = None
    if checkpoint is not None and not args.no_journal:
        journal = folder / "journals" / f"{method}{tag}.safetensors"
    identity = dict(method=method, batch_size=args.batch_size, hparams=json.loads(args.hparams),
                    dataset=Path(args.dataset).name, model=args.model)
    start = time.perf_counter()
    try:
        with (search_journal(model, journal, identity=identity) if journal else contextlib.nullcontext()) as book:
            report = evaluate(model, facts, method=method, mode="sequential", every=args.every,
                              batch_size=args.batch_size, known_only=False, time_limit=args.time_limit,
                              metrics=args.metrics.split(","), perplexity_texts=args.perplexity_texts, fluency_prompts=3,
                              fluency_tokens=24, checkpoint=checkpoint, stop_after=args.stop_after,
                              **json.loads(args.hparams))
    except EvaluationInterrupted as stopped:
        report = stopped.report
    data = report.to_dict()
    data["meta"] = {
        "command": shlex.join(["python", "benchmarks/sequential_curves.py", *sys.argv[1:]]),
        "dataset": str(Path(args.dataset).name), "records": len(facts), "known_by_model": known,
        "hparams": json.loads(args.hparams),
        "collapse_point": collapse_point(data["curve"]), "wall_seconds": time.perf_counter() - start,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "journal": None if journal is None else str(journal.relative_to(ROOT) if journal.is_relative_to(ROOT) else journal),
        "searches_read_from_journal": book.hits if journal else 0,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{method}{tag}.json"
    path.write_text(json.dumps(data, indent=1))
    last = data["curve"][-1]
    print(f"{method}{tag}: {last['n_edits']} edits, ES {last.get('efficacy_score')}, PS {last.get('paraphrase_score')}, "
          f"NS {last.get('neighborhood_score')}, ppl {data['curve'][0].get('perplexity')} -> {last.get('perplexity')}, "
          f"collapse at {data['meta']['collapse_point']}, known {known}/{len(facts)}, "
          f"{data['meta']['wall_seconds']:.0f} s", flush=True)
    return path


def figure() -> Path | None:
    """All methods' curves in one figure (edits on a log axis), from the JSON files there."""
    from workbench.evaluation.evaluate import read_report
    from workbench.figures.evaluation import degradation_figure

    reports = [read_report(path) for path in sorted(OUT.glob("*.json"))]
    if not reports:
        return None
    out = OUT / "sequential_1k.html"
    degradation_figure(reports).write_html(str(out), include_plotlyjs="cdn")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["grace"])
    p.add_argument("--dataset", default=str(DATASET))
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=None)
    p.add_argument("--perplexity-texts", type=int, default=10)
    p.add_argument("--metrics", default="teacher",
                   help="what each curve point scores: teacher (ES / PS / NS, teacher-forced) and, with "
                        "teacher,generation, the generated answers' efficacy, paraphrase and neighbourhood "
                        "too (a run keeps the metrics it started with: a checkpoint of other metrics is refused)")
    p.add_argument("--hparams", default="{}", help='JSON of edit settings, e.g. {"n_prefixes": 2, "steps": 15}')
    p.add_argument("--tag", default="", help="appended to the file name (a variant beside the default run)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop at the first curve point at or past this many edits (resumable, scored as an "
                        "intermediate point of the whole run)")
    p.add_argument("--subdir", default="",
                   help="a folder under sequential_1k/ for the JSON (kept out of the figure and the Compare panel)")
    p.add_argument("--figure-only", action="store_true")
    p.add_argument("--fresh", action="store_true", help="start over: drop the weight editors' checkpoints")
    p.add_argument("--no-journal", action="store_true",
                   help="neither read nor record the target searches (by default they are kept in "
                        "sequential_1k/journals/, so the run can go on from them on another machine)")
    args = p.parse_args()
    _stop_on_sigterm()
    if not args.figure_only:
        for method in args.methods:
            run(method, args)
    if not args.subdir:  # a run in a subfolder is not in the figure
        print("figure:", figure())


if __name__ == "__main__":
    main()
