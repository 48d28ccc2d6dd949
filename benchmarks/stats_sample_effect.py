"""Do ROME's and MEMIT's committed rows move with larger key statistics counted with BOS? (issue 44)

Evaluates the method on the first ``--limit`` known bundled facts with C over ``--samples`` tokens
and BOS positions counted (AlphaEdit's published statistics), as ``assets/results/<method>_independent.json``
was made otherwise (20,000 tokens, BOS skipped), and compares the two paired by fact: the mean
difference of each teacher-forced rate with a 95 % paired-bootstrap interval.

Usage::

    WORKBENCH_THREADS=1 python benchmarks/stats_sample_effect.py --method rome --limit 50

Writes ``assets/results/<method>_independent_stats100k-bos.json`` (the report) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "assets" / "results"
KEYS = ("efficacy", "paraphrase", "neighborhood", "efficacy_magnitude", "paraphrase_magnitude",
        "neighborhood_magnitude")


def main() -> int:
    import workbench as wb
    from workbench.evaluation import evaluate, paired_difference, read_report

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=("rome", "memit"), default="rome")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--samples", type=int, default=100_000)
    args = p.parse_args()
    committed = read_report(RESULTS / f"{args.method}_independent.json")
    model = wb.load_model("gemma-3-270m")
    facts = wb.read_facts(str(ROOT / "assets" / "known_facts.json"))
    report = evaluate(model, facts, method=args.method, limit=args.limit, every=20, metrics="teacher",
                      samples=args.samples, stats_bos=True)
    out = RESULTS / f"{args.method}_independent_stats{args.samples // 1000}k-bos.json"
    data = report.to_dict()
    data["settings"]["command"] = "python benchmarks/stats_sample_effect.py " + " ".join(sys.argv[1:])
    out.write_text(json.dumps(data, indent=1))
    old = {(r.index, r.subject): r for r in committed.rows if r.after is not None}
    pairs = [(old[(r.index, r.subject)], r) for r in report.rows if r.after is not None and (r.index, r.subject) in old]
    print(f"{len(pairs)} facts paired with the committed run (C over 20,000 tokens, BOS skipped)")
    print("| rate | committed | 100k + BOS | difference [95 %] |\n|---|---|---|---|")
    for key in KEYS:
        a = [o.after.get(key) for o, _ in pairs]
        b = [n.after.get(key) for _, n in pairs]
        iv = paired_difference(b, a)
        if iv is None:
            continue
        mean = lambda xs: sum(x for x in xs if x is not None) / max(1, sum(x is not None for x in xs))  # noqa: E731
        print(f"| {key} | {mean(a):.3f} | {mean(b):.3f} | {iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
