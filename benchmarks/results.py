"""Regenerate the committed evaluation results and docs/results.md.

Usage::

    WORKBENCH_CACHE=/tmp/wbcache python benchmarks/results.py --methods in-context retrieval --limit 100
    python benchmarks/results.py --docs-only        # rebuild docs/results.md from assets/results/
    python benchmarks/results.py --methods rome memit --modes sequential --parallel 2   # side by side on Ray
    python benchmarks/results.py --methods rome --modes sequential --limit 200 --device cuda \
        --time-limit 1800 --out /tmp/res               # on a GPU, JSON only, stop starting edits after 30 min

Each (method, mode) run writes ``assets/results/<method>_<mode>.json`` (summary,
settings, per-fact rows); the docs table is built from whatever JSON files are
there, so methods can be (re)run one at a time (``--tag T`` writes ``<method>_<mode>_T.json``
instead, for a variant beside the default run). The retrieval threshold sweep is
written to ``assets/results/retrieval_threshold.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "assets" / "results"
DEFAULT_DATASET = ROOT / "assets" / "known_facts.json"
DOCS = ROOT / "docs" / "results.md"

COLUMNS = [  # (summary key, header, percent?)
    ("n", "n", False), ("n_skipped", "skipped", False),
    ("efficacy_score", "ES", True), ("paraphrase_score", "PS", True), ("neighborhood_score", "NS", True),
    ("score", "S", True), ("implication_score", "IS", True), ("implication_score_before", "IS before", True),
    ("fluency_before", "fluency before", False), ("fluency", "fluency", False),
    ("perplexity_before", "ppl before", False), ("perplexity_after", "ppl after", False),
    ("seconds_per_edit", "s/edit", False),
]
EASYEDIT = [("easyedit_rewrite_acc", "rewrite acc", True), ("easyedit_rephrase_acc", "rephrase acc", True),
            ("easyedit_locality_acc", "locality acc", True)]
#: The critics' measures: what the model says (greedy answers judged) and CounterFact+.
CRITICS = [("n", "n", False), ("gen_efficacy", "ES said", True), ("gen_efficacy_neither", "ES neither", True),
           ("gen_paraphrase", "PS said", True), ("gen_question", "question said", True),
           ("gen_neighborhood", "NS said", True), ("neighborhood_plus", "NS+", True),
           ("gen_neighborhood_plus", "NS+ said", True), ("nkl", "NKL", False),
           ("gen_efficacy_before", "ES said before", True), ("gen_question_before", "question said before", True)]


def _fmt(value, percent: bool, interval=None) -> str:
    """A cell; a rate with an interval prints ``value ± half-width`` (both in %)."""
    if value is None:
        return "–"
    if percent:
        if interval:
            return f"{100 * value:.1f} ± {100 * (interval[1] - interval[0]) / 2:.1f}"
        return f"{100 * value:.1f}"
    if interval and isinstance(value, float):
        return f"{value:.3g} ± {(interval[1] - interval[0]) / 2:.2g}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _where(run: dict) -> str:
    """Short name of the hardware a run was measured on (files older than the field: this 2-core CPU)."""
    settings = run.get("settings", {})
    hw = settings.get("hardware") or "cpu, 2 cores"
    # A resumed run names every machine it ran on, in order, once each.
    parts = [p.get("hardware") or "cpu, 2 cores" for p in settings.get("resumed") or []] + [hw]
    hw = " + ".join(dict.fromkeys(h.split(" (torch")[0] for h in parts))
    # The two 1-thread sequential files were written before hardware() said "thread" in the singular;
    # the files keep what the run wrote, the table reads well.
    return hw.split(" (torch")[0].replace(" 1 threads", " 1 thread")


def _label(run: dict) -> str:
    """The method, with any hyperparameters the run set (rows at the defaults show the name alone)."""
    s, kwargs = run["summary"], run.get("settings", {}).get("edit_kwargs") or {}
    label = s["method"] + (" (" + ", ".join(f"{k} {v}" for k, v in kwargs.items()) + ")" if kwargs else "")
    # The tag says which variant; "critics" files are already told apart by their columns' values.
    return label + (f" [{run['_tag']}]" if run.get("_tag") and run["_tag"] not in label.replace(" ", "-") else "")


def _cells(run: dict, columns) -> str:
    """A summary's cells; ``n`` carries a mark when the run stopped at its time limit."""
    s = run["summary"]
    ivs = s.get("intervals") or {}
    out = []
    for key, _, pct in columns:
        cell = _fmt(s.get(key), pct, ivs.get(key))
        if key == "n" and s.get("stopped_early"):
            cell += " (time limit)"
        out.append(cell)
    return " | ".join(out)


def _with_intervals(data: dict) -> dict:
    """A run saved before summaries carried intervals gets them from its own per-fact rows."""
    if data["summary"].get("intervals") is None and data.get("rows"):
        from workbench.evaluation import EvalReport

        report = EvalReport.from_dict(data)
        ivs = {}
        for key, _, pct in COLUMNS + EASYEDIT + CRITICS:
            if not pct:
                continue
            try:
                iv = report.interval(key)
            except Exception:
                continue
            if iv is not None:
                ivs[key] = [iv.lo, iv.hi]
        data["summary"]["intervals"] = ivs
    return data


def write_docs() -> str:
    runs = []
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        # Other benchmarks keep their JSON here too (knockout_study.json has a "summary" of its own).
        if isinstance(data.get("summary"), dict) and {"method", "mode"} <= data["summary"].keys():
            s = data["summary"]
            # A file written with --tag T (<method>_<mode>_T.json) is named by its tag in the tables.
            data["_tag"] = path.stem[len(f"{s['method']}_{s['mode']}"):].lstrip("_")
            runs.append(_with_intervals(data))
    lines = [
        "# Evaluation results",
        "",
        "Model: see each row; dataset: `assets/known_facts.json` (bundled), filtered to the facts the model",
        "knows. CounterFact scores in % (ES efficacy, PS paraphrase, NS neighbourhood, S harmonic mean of",
        "the three, IS implication: top-1 is the implied target). Fluency: ROME's weighted bi/tri-gram",
        "entropy of sampled generations; ppl: held-out Wikipedia perplexity. Drift measures in independent",
        "mode are sampled on every `every`-th fact (see the JSON `settings`). ± after a rate: half-width of",
        "its 95 % bootstrap interval over facts (runs saved before intervals existed print none). s/edit depends on the",
        "hardware column: rows run on a GPU are not comparable with the 2-core CPU rows on speed.",
        "\"(time limit)\" after n: the run stopped starting new edits at its `--time-limit`; its scores",
        "cover the first n facts only. A run resumed with `--resume` went on from such a stop; its JSON",
        "`settings.resumed` names each earlier part's machine, wall time and command. Runs made on a",
        "lent H100 (same code and package versions but torch; `settings.hardware` names the build) are",
        "in `assets/results/replication/`.",
        "",
        "| method | mode | model | hardware | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|" + "---|" * (4 + len(COLUMNS)),
    ]
    for r in runs:
        s = r["summary"]
        lines.append(f"| {_label(r)} | {s['mode']} | {s['model']} | {_where(r)} | {_cells(r, COLUMNS)} |")
    critics = [r for r in runs if (r["summary"].get("gen_efficacy") is not None
                                   or r["summary"].get("neighborhood_plus") is not None)]
    if critics:
        lines += [
            "",
            "## What the model says: generated answers and CounterFact+",
            "",
            "The same runs scored the way the methods' critics score them (`--metrics` of `workbench evaluate`).",
            "*said*: the model's greedy answer (10 tokens, first sentence) names the object the test wants —",
            "the new object after the edit and paraphrase prompts and the question form, the true object",
            "after neighbour prompts — judged by normalised matching (`workbench/evaluation/judge.py`);",
            "*ES neither*: edit-prompt answers that name neither object. *NS+*: neighbour prompts read",
            "right after the edit statement (\"<edit prompt> <new object>.\"), teacher-forced and said",
            "(CounterFact+); NKL: KL(unedited ‖ edited) of the next token after the plain neighbour prompts.",
            "*before*: the unedited model on the same prompts. ± is the half-width of a 95 % bootstrap",
            "interval over the facts (2,000 resamples, seed 0).",
            "",
            "| method | mode | " + " | ".join(h for _, h, _ in CRITICS) + " |",
            "|" + "---|" * (2 + len(CRITICS)),
        ]
        for r in critics:
            s = r["summary"]
            lines.append(f"| {_label(r)} | {s['mode']} | {_cells(r, CRITICS)} |")
    lines += [
        "",
        "EasyEdit's teacher-forced token accuracy is a different metric (fraction of target tokens that",
        "are the argmax under teacher forcing; locality = neighbour tokens unchanged); not comparable",
        "with the CounterFact columns above.",
        "",
        "| method | mode | " + " | ".join(h for _, h, _ in EASYEDIT) + " |",
        "|" + "---|" * (2 + len(EASYEDIT)),
    ]
    for r in runs:
        s = r["summary"]
        lines.append(f"| {_label(r)} | {s['mode']} | {_cells(r, EASYEDIT)} |")
    for r in runs:
        if r.get("curve"):
            s = r["summary"]
            lines += ["", f"## Sequential curve: {s['method']} ({s['model']}, {_where(r)})", "",
                      "Scores of all edits made so far (%), held-out perplexity and fluency after each block of edits:", "",
                      ]
            cols = [("efficacy_score", "ES", True), ("paraphrase_score", "PS", True), ("neighborhood_score", "NS", True),
                    ("implication_score", "IS", True), ("perplexity", "ppl", False), ("fluency", "fluency", False)]
            # Curves measured with the generated answers get their said columns too.
            cols += [(k, h, True) for k, h in (("gen_efficacy", "ES said"), ("gen_paraphrase", "PS said"),
                                               ("gen_neighborhood", "NS said"))
                     if any(p.get(k) is not None for p in r["curve"])]
            lines += ["| edits | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (1 + len(cols)) + "|"]
            for p in r["curve"]:
                lines.append(f"| {p['n_edits']} | " + " | ".join(_fmt(p.get(k), pct) for k, _, pct in cols) + " |")
    sweep_path = RESULTS / "retrieval_threshold.json"
    if sweep_path.exists():
        sweep = json.loads(sweep_path.read_text())
        lines += ["", "## Retrieval threshold", "",
                  "Cosine similarity (all-MiniLM-L6-v2) of paraphrases to their own fact's prompt (should recall) and",
                  "of neighbour prompts to the edited fact (should not). Recall rates per threshold:", ""]
        for name, part in sweep.items():
            lines += [f"**{name}** ({part['n_paraphrase']} paraphrases, {part['n_neighborhood']} neighbour prompts; "
                      f"paraphrase percentiles 5/25/50/75/95: {part['paraphrase_percentiles_5_25_50_75_95']}, "
                      f"neighbour: {part['neighborhood_percentiles_5_25_50_75_95']})", "",
                      "| threshold | paraphrase recall | neighbour recall | balanced accuracy |", "|---|---|---|---|"]
            for row in part["rows"]:
                lines.append(f"| {row['threshold']:.2f} | {_fmt(row['paraphrase_recall'], True)} | "
                             f"{_fmt(row['neighborhood_recall'], True)} | {_fmt(row['balanced_accuracy'], True)} |")
            lines.append("")
    lines += _replication_lines(runs) + _memit_lambda_lines()
    with_cmd = [r for r in runs if r.get("settings", {}).get("command")]
    if with_cmd:
        lines += ["", "## Regenerate", "", "Each row's JSON is in `assets/results/`; the command that wrote it:", ""]
        for r in with_cmd:
            s = r["summary"]
            lines.append(f"- {_label(r)} / {s['mode']}: `{r['settings']['command']}`")
    if sweep_path.exists():
        lines += ["", "The retrieval threshold table is rewritten by any `benchmarks/results.py` run without `--no-sweep`."]
    text = "\n".join(lines) + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    old = DOCS.read_text() if DOCS.exists() else ""
    if _GEN_START in old and _GEN_END in old:
        head, rest = old.split(_GEN_START, 1)
        _, tail = rest.split(_GEN_END, 1)
        DOCS.write_text(head + _GEN_START + "\n" + text + _GEN_END + tail)
    else:
        DOCS.write_text(text)
    _write_short_table(runs)
    return text


def _replication_lines(runs: list[dict]) -> list[str]:
    """Sequential curves re-run elsewhere (assets/results/replication/) beside the committed one."""
    lines: list[str] = []
    by_key = {(r["summary"]["method"], r["summary"]["mode"]): r for r in runs}
    groups: dict[tuple, list[tuple[str, dict]]] = {}
    for path in sorted((RESULTS / "replication").glob("*.json")):
        rep = json.loads(path.read_text())
        key = (rep["summary"]["method"], rep["summary"]["mode"])
        if key in by_key and rep.get("curve") and by_key[key].get("curve"):
            groups.setdefault(key, []).append((str(path.relative_to(ROOT)), rep))
    for (method, mode), reps in groups.items():
        base = by_key[(method, mode)]
        runs_here = [(f"assets/results/{method}_{mode}.json", base)] + reps
        lines += ["", f"## The same {method} {mode} run, repeated", "",
                  "Same code, facts and order; only the arithmetic differs (thread count, GPU kernels), and in",
                  "sequential mode each edit starts from the weights the earlier ones left, so rounding",
                  "differences grow into different edits. Row 0 scores all the facts a run was given",
                  "(its --limit). ES / PS / NS in %, then held-out perplexity:", ""]
        for i, (name, r) in enumerate(runs_here, 1):
            lines.append(f"{i}. `{name}` — {_where(r)}, n={r['summary']['n']}: `{r['settings'].get('command', '')}`")
        order = " / ".join(str(i) for i in range(1, len(runs_here) + 1))
        lines += ["", f"| edits | ES (runs {order}) | PS | NS | ppl |", "|---|---|---|---|---|"]
        curves = [{p["n_edits"]: p for p in r["curve"]} for _, r in runs_here]
        # Only the points at least two runs reached: the rest is in the curve tables above.
        for n_edits in sorted(n for n in set().union(*curves) if sum(n in c for c in curves) > 1):
            cells = []
            for k, pct in (("efficacy_score", True), ("paraphrase_score", True), ("neighborhood_score", True),
                           ("perplexity", False)):
                cells.append(" / ".join(_fmt(c[n_edits].get(k), pct) if n_edits in c else "–" for c in curves))
            lines.append(f"| {n_edits} | " + " | ".join(cells) + " |")
    return lines


def _memit_lambda_lines() -> list[str]:
    """The MEMIT λ sweep (benchmarks/memit_sweep.py), if one is committed."""
    lines: list[str] = []
    for path in sorted((ROOT / "assets" / "sweeps").glob("*_memit_lambda.json")):
        d = json.loads(path.read_text())
        lines += ["", f"## MEMIT: {d['n_facts']} facts in one batch, by λ ({d['model']})", "",
                  f"`{path.relative_to(ROOT)}`, made with `{d.get('command', 'benchmarks/memit_sweep.py')}` on "
                  f"{d.get('hardware', 'this CPU')}. Scores as in `benchmarks/edit.py` (%); unedited: ES "
                  f"{_fmt(d['unedited']['efficacy'], True)}, PS {_fmt(d['unedited']['paraphrase'], True)}, NS "
                  f"{_fmt(d['unedited']['neighborhood'], True)}, perplexity {_fmt(d['perplexity_before'], False)}.", "",
                  "| layers | λ | ES | PS | NS | perplexity | residual left |", "|---|---|---|---|---|---|---|"]
        for r in d["runs"]:
            lines.append(f"| {r['layers'][0]}-{r['layers'][-1]} | {r['mom2_weight']:g} | {_fmt(r['efficacy'], True)} | "
                         f"{_fmt(r['paraphrase'], True)} | {_fmt(r['neighborhood'], True)} | {_fmt(r['perplexity'], False)} | "
                         f"{_fmt(r.get('final_residual_norm'), False)} |")
    return lines


_MARK_START, _MARK_END = "<!-- results:start -->", "<!-- results:end -->"
# docs/results.md: the generated tables go between these; the hand-written sections around them stay.
_GEN_START, _GEN_END = "<!-- generated:start -->", "<!-- generated:end -->"


def _implication_cell(run: dict) -> str:
    """The method's rate on the implication facts (``assets/results/implications/``), for its
    independent runs: many more implication probes than CounterFact's few (docs/results.md, "Implications")."""
    s = run["summary"]
    path = ROOT / "assets" / "results" / "implications" / f"{s['method']}_independent.json"
    if s.get("mode") != "independent" or not path.exists() or "critics" in _label(run) or "(" in _label(run):
        return "–"
    other = json.loads(path.read_text())["summary"]
    iv = (other.get("intervals") or {}).get("implication_score")
    return f"{_fmt(other.get('implication_score'), True, iv)} ({other.get('n')})"


def _write_short_table(runs: list[dict]) -> None:
    """The short version of the table, between the results markers of docs/results.md."""
    if not DOCS.exists():
        return
    readme = DOCS.read_text()
    if _MARK_START not in readme or _MARK_END not in readme:
        return
    short = [("n", "n", False), ("efficacy_score", "ES", True), ("gen_efficacy", "ES said", True),
             ("paraphrase_score", "PS", True), ("gen_paraphrase", "PS said", True),
             ("neighborhood_score", "NS", True), ("neighborhood_plus", "NS+", True),
             ("implication_score", "IS", True), ("seconds_per_edit", "s/edit", False)]
    rows = ["| method | mode | hardware | " + " | ".join(h for _, h, _ in short) + " | IS, implication set (n) |",
            "|" + "---|" * (4 + len(short))]
    for r in runs:
        s = r["summary"]
        rows.append(f"| {_label(r)} | {s['mode']} | {_where(r)} | {_cells(r, short)} | {_implication_cell(r)} |")
    head, rest = readme.split(_MARK_START, 1)
    _, tail = rest.split(_MARK_END, 1)
    DOCS.write_text(head + _MARK_START + "\n" + "\n".join(rows) + "\n" + _MARK_END + tail)


def threshold_sweep(facts) -> dict:
    from workbench.editing.retrieval import similarity_sweep

    thresholds = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
    cf = [f for f in facts if not str(f.case_id).startswith("known")]
    derived = [f for f in facts if str(f.case_id).startswith("known")]
    out = {}
    for name, part in (("CounterFact facts", cf), ("derived facts (known_1000)", derived)):
        if part:
            out[name] = similarity_sweep(part, thresholds)
    return out


def hardware(model) -> str:
    """Where the run's seconds were measured: a GPU's name, or the CPU thread count."""
    import torch

    if model.device.type == "cuda":
        return f"{torch.cuda.get_device_name(model.device)} (torch {torch.__version__})"
    n = torch.get_num_threads()
    return f"cpu, {n} thread{'s' if n != 1 else ''} (torch {torch.__version__})"


def _run_job(model, job) -> tuple[str, dict]:
    """One (method, mode) run: ``(path, report JSON)`` with its settings and the command that makes it."""
    import workbench as wb
    from workbench.evaluation import evaluate, read_report

    method, mode, path, s = job
    facts = wb.read_facts(s["dataset"])
    t0 = time.perf_counter()
    earlier = read_report(path) if s["resume"] and Path(path).exists() else None
    report = evaluate(model, facts, method=method, mode=mode, limit=s["limit"], every=s["every"],
                      time_limit=s["time_limit"], resume=earlier, metrics=s["metrics"], **s["hparams"])
    data = report.to_dict()
    data["settings"]["dataset"] = os.path.relpath(s["dataset"], ROOT)
    data["settings"]["wall_seconds"] = time.perf_counter() - t0
    data["settings"]["hardware"] = hardware(model)
    if earlier is not None:
        # Each part's machine, wall time and command stay on record; the wall time is the sum.
        part = data["settings"]["resumed"][-1]
        for key in ("hardware", "wall_seconds", "command"):
            part[key] = earlier.settings.get(key)
        data["settings"]["wall_seconds"] += earlier.settings.get("wall_seconds") or 0.0
    hparams = s["hparams"]
    # The command that reproduces this one file (the docs list them per row).
    data["settings"]["command"] = (
        f"python benchmarks/results.py --methods {method} --modes {mode} --every {s['every']} --no-sweep"
        + (f" --limit {s['limit']}" if s["limit"] is not None else "")
        + (f" --model {s['model']}" if s["model"] != "gemma-3-270m" else "")
        + (f" --dataset {data['settings']['dataset']}" if Path(s["dataset"]).resolve() != DEFAULT_DATASET else "")
        + (f" --device {s['device']}" if s["device"] else "")
        + (f" --time-limit {s['time_limit']:g}" if s["time_limit"] else "")
        + (f" --hparams '{json.dumps(hparams)}'" if hparams else "")
        + (f" --tag {s['tag']}" if s["tag"] else "")
        + (f" --metrics {s['metrics']}" if s["metrics"] != "teacher,generation,question,plus" else "")
        + (" --resume" if earlier is not None else "")
    )
    return path, data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["in-context", "retrieval"])
    p.add_argument("--modes", nargs="+", default=["independent"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--dataset", default=str(DEFAULT_DATASET))
    p.add_argument("--docs-only", action="store_true")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if available, else CPU)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds per run after which no new edit starts (the JSON says stopped_early)")
    p.add_argument("--hparams", default=None, help='JSON of edit hyperparameters, e.g. \'{"linf": 0.005}\'')
    p.add_argument("--resume", action="store_true",
                   help="go on from the JSON a stopped run left (in --out, else assets/results/): independent mode only")
    p.add_argument("--tag", default=None,
                   help="name the file <method>_<mode>_<tag>.json, e.g. for a run with --hparams beside the default one")
    p.add_argument("--metrics", default="teacher,generation,question,plus",
                   help="measures to take (see workbench evaluate --help); default all but letter")
    p.add_argument("--out", default=None,
                   help="write the JSON files here instead of assets/results/ (docs untouched)")
    p.add_argument("--parallel", type=int, default=0, metavar="N",
                   help="run the (method, mode) pairs side by side, each as a Ray task on one of N workers "
                        "(the cluster extra; each worker holds its own model)")
    args = p.parse_args(argv)
    if args.docs_only:
        print(write_docs())
        return 0
    os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    import workbench as wb

    facts = wb.read_facts(args.dataset)
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_sweep:
        (out / "retrieval_threshold.json").write_text(json.dumps(threshold_sweep(facts), indent=1) + "\n")
    try:
        hparams = json.loads(args.hparams) if args.hparams else {}
    except json.JSONDecodeError as exc:
        p.error(f"--hparams is not JSON ({exc}): give e.g. '{{\"linf\": 0.005}}'")
    if not isinstance(hparams, dict):
        p.error("--hparams must be a JSON object of hyperparameter names and values")
    model = wb.load_model(args.model, device=args.device)
    runs = [(method, mode) for method in args.methods for mode in args.modes]
    settings = dict(limit=args.limit, every=args.every, time_limit=args.time_limit, metrics=args.metrics,
                    hparams=hparams, model=args.model, dataset=args.dataset, device=args.device, tag=args.tag,
                    resume=args.resume)
    jobs = [(method, mode, str(out / (f"{method}_{mode}" + (f"_{args.tag}" if args.tag else "") + ".json")), settings)
            for method, mode in runs]
    if args.parallel and len(jobs) > 1:
        # Each (method, mode) is one Ray task on its own worker (its own model); a sequential run
        # cannot be split, but several can run side by side.
        from workbench.runtime.cluster import Pool, cache_files
        from workbench.editing.stats import DEFAULT_SAMPLES, statistics_files

        files = {}
        for method, _ in runs:
            files.update(cache_files(statistics_files(model, method, samples=hparams.get("samples", DEFAULT_SAMPLES),
                                                      layers=hparams.get("layers"))))
        workers = min(len(jobs), args.parallel)
        with Pool(model, workers, files=files, paths=[str(Path(__file__).resolve().parent)]) as pool:
            outcomes = pool.map(_run_job, jobs, desc=f"{len(jobs)} runs on {pool.workers} workers", retries=0)
        results = []
        for job, outcome in zip(jobs, outcomes):
            if outcome is None or not outcome.ok:
                print(f"results.py: {job[0]} {job[1]} failed: {outcome.error if outcome else 'not run'}", file=sys.stderr)
                continue
            results.append(outcome.value)
    else:
        results = [_run_job(model, job) for job in jobs]
    for path, data in results:
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
        print(json.dumps(data["summary"]), flush=True)
    if not args.out:
        write_docs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
