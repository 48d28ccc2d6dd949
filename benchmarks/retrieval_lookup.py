"""Benchmark: the retrieval memory's lookup time and recall with 1,000 and 10,000 stored facts.

Facts: the 1,000 CounterFact edits of ``../shared/data/counterfact-edit-1k.json`` and, to
reach 10,000, facts written from the knowledge table (``assets/knowledge/geo.json``: a
city's country, a country's capital, continent and currency, each given a new object).
The memory is built directly (:class:`~workbench.editing.retrieval.RetrievalEdit`, no
language model). For each memory size it measures, on the CounterFact facts' prompts:

* lookup time per prompt (``recall``: mention lookup, then the similarity fallback when
  no subject is named), median / 95th percentile / mean, for the stored prompts, their
  question forms (:func:`workbench.evaluation.relations.question_prompt`), their letter
  prompts, their paraphrases (``rephrase_prompt``) and their neighbours;
* recall: the share of prompts whose own fact is among those recalled, and of
  neighbour prompts (``locality_prompt``, another subject) that recall the fact (should be 0).

The first similarity lookup embeds every stored prompt (timed separately as ``embed_s``);
the query embeddings are cached per prompt (cleared for each size), so each prompt is
timed on its first lookup.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retrieval_lookup.py --json assets/results/retrieval_lookup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
COUNTERFACT = ROOT.parent / "shared" / "data" / "counterfact-edit-1k.json"


def counterfact_facts(path: Path):
    from workbench.facts import Fact

    facts, extra = [], []
    for row in json.loads(path.read_text()):
        subject, prompt = row["subject"], row["prompt"]
        if subject not in prompt:
            continue
        try:
            fact = Fact(subject, prompt.replace(subject, "{}", 1), row.get("ground_truth"), row["target_new"])
        except Exception:
            continue
        facts.append(fact)
        extra.append({"paraphrase": row.get("rephrase_prompt"), "neighbour": row.get("locality_prompt")})
    return facts, extra


def table_facts(n: int, seed: int = 0):
    """Up to ``n`` facts from the knowledge table, each with a different (wrong) object."""
    from workbench.facts import Fact

    geo = json.loads((ROOT / "assets" / "knowledge" / "geo.json").read_text())
    rng = random.Random(seed)
    countries = sorted(geo["countries"])
    out = []
    for name, info in geo["countries"].items():
        for prompt, key in (("The capital of {} is", "capital"), ("{} is located on the continent of", "continent"),
                            ("The currency of {} is the", "currency")):
            if info.get(key):
                out.append(Fact(name, prompt, str(info[key]), "Atlantis"))
    for city, rows in geo["cities"].items():
        if len(out) >= n:
            break
        true = rows[0]["country"]
        new = rng.choice([c for c in countries[:60] if c != true])
        out.append(Fact(city, "{} is a city in the country of", true, new))
    return out[:n]


def timed(memory, prompts):
    times, found = [], []
    for p in prompts:
        t = time.perf_counter()
        rows = memory.recall(p)
        times.append(time.perf_counter() - t)
        found.append(rows)
    return times, found


def stats(times):
    import numpy as np

    a = np.asarray(times) * 1000
    return {"n": len(a), "median_ms": round(float(np.median(a)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3), "max_ms": round(float(a.max()), 3)}


def run(sizes, limit, mention=True):
    from workbench.editing import retrieval as r
    from workbench.editing.incontext import statement
    from workbench.evaluation.relations import letter_prompts, question_prompt

    cf, extra = counterfact_facts(COUNTERFACT)
    r.embed(["warm up the encoder"])
    out = []
    for size in sizes:
        facts = cf[:size] + table_facts(max(0, size - len(cf)))
        r._embed_one.cache_clear()  # each size pays for its own query embeddings
        t = time.perf_counter()
        memory = r.RetrievalEdit([f.text for f in facts], [statement(f) for f in facts],
                                 subjects=[f.subject for f in facts], mention=mention)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        memory.vectors  # noqa: B018 -- the similarity fallback's keys, embedded once
        embed_s = time.perf_counter() - t
        probe = list(zip(cf, extra))[:limit]
        forms = {
            "prompt": [(f, f.text) for f, _ in probe],
            "question": [(f, q) for f, _ in probe if (q := question_prompt(f))],
            "letter": [(f, letter_prompts(f)[0]) for f, _ in probe],
            "paraphrase": [(f, e["paraphrase"]) for f, e in probe if e["paraphrase"]],
            "neighbour": [(f, e["neighbour"]) for f, e in probe if e["neighbour"]],
        }
        row = {"stored_facts": len(facts), "build_s": round(build_s, 3), "embed_s": round(embed_s, 2), "forms": {}}
        all_times = []
        for form, pairs in forms.items():
            times, found = timed(memory, [p for _, p in pairs])
            all_times += times
            hits = [statement(f) in {x.statement for x in rows} for (f, _), rows in zip(pairs, found)]
            why = [rows[-1].why if rows else "none" for rows in found]
            row["forms"][form] = {**stats(times), "recall": round(sum(hits) / len(hits), 4),
                                  "by_mention": round(why.count("mention") / len(why), 4),
                                  "by_similarity": round(why.count("similarity") / len(why), 4)}
        row["all_prompts"] = stats(all_times)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--limit", type=int, default=300, help="CounterFact facts whose prompts are looked up")
    ap.add_argument("--similarity-only", action="store_true", help="the memory as before: no mention lookup")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    load_before = os.getloadavg()
    t = time.perf_counter()
    rows = run(args.sizes, args.limit, mention=not args.similarity_only)
    result = {
        "benchmark": "retrieval_lookup", "mention": not args.similarity_only, "limit": args.limit,
        "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - t, 1), "python": platform.python_version(), "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
