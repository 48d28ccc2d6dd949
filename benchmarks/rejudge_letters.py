"""Judge the committed letters again with the current judge (text only, no model).

The letter texts are kept in every report's rows (``before``/``after`` → ``letters``), so a
mended judge can be applied to runs made before it: each letter's verdict, each fact's
``letter_*`` rates and the report's summary (means and bootstrap intervals) are recomputed and
the file is rewritten with ``settings["judge"]`` saying so. Nothing else in the report changes.

Usage:
    python benchmarks/rejudge_letters.py assets/results/letters/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: What the rewritten reports say of their verdicts.
JUDGE = ("workbench/evaluation/judge.py letter_verdict with the subject (checked on assets/judge_labels/: "
         "letters_100.json, letters_100b.json, letters_runs_66.json)")


def rejudge(data: dict) -> int:
    """Re-judge every letter of a report dict in place; returns how many verdicts changed."""
    from workbench.evaluation.judge import LETTER_VERDICTS, letter_verdict

    changed = 0
    for row in data["rows"]:
        for side in ("before", "after", "immediate"):
            scores = row.get(side)
            if not scores or not scores.get("letters"):
                continue
            for letter in scores["letters"]:
                verdict = letter_verdict(letter["text"], new=row["target_new"], true=row["target_true"],
                                         subject=row["subject"])
                changed += verdict != letter["verdict"]
                letter["verdict"] = verdict
            n = len(scores["letters"])
            for v in LETTER_VERDICTS:
                scores[f"letter_{v}"] = sum(x["verdict"] == v for x in scores["letters"]) / n
    return changed


def main(argv: list[str] | None = None) -> int:
    from workbench.evaluation.report import EvalReport, summarise

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+")
    args = parser.parse_args(argv)
    for path in map(Path, args.reports):
        data = json.loads(path.read_text())
        old = {k: data["summary"].get(k) for k in ("letter_new", "letter_true", "letter_new_before", "letter_true_before")}
        changed = rejudge(data)
        if not changed:
            print(json.dumps({"report": str(path), "verdicts_changed": 0}))
            continue  # nothing to rewrite: the file keeps its bytes
        report = EvalReport.from_dict(data, source=str(path))
        keep = {k: v for k, v in data["summary"].items() if k not in summarise(report.rows)}
        data["summary"] = {**summarise(report.rows), **keep}
        data["settings"]["judge"] = JUDGE
        path.write_text(json.dumps(data, indent=1) + "\n")
        new = {k: data["summary"].get(k) for k in old}
        print(json.dumps({"report": str(path), "verdicts_changed": changed, "before": old, "after": new}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
