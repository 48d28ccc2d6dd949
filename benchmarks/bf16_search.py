"""The target search's bfloat16 blocks against float32: do the two make the same edits?

Compares two committed independent ROME runs on the same bundled facts, one with the search's
bfloat16 blocks (the default row) and one with the float32 search, fact by fact: the share of
facts whose three verdicts (efficacy, paraphrase, neighbourhood) are all equal, and the share
of the 3 x n verdicts that are. ``--write`` records the result for ``low_precision="auto"``
(``workbench/editing/search.py``), which takes the bfloat16 blocks only where the facts agree
on at least 99 %.

Usage (no model needed):
    python benchmarks/bf16_search.py --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BF16 = ROOT / "assets" / "results" / "rome_independent.json"
FLOAT32 = ROOT / "assets" / "sweeps" / "gemma-3-270m_rome_independent_float32.json"
OUT = ROOT / "assets" / "results" / "bf16_search.json"
VERDICTS = ("efficacy", "paraphrase", "neighborhood")


def agreement(bf16: dict, float32: dict) -> dict:
    """Fact-level and verdict-level agreement of two reports' rows (matched by subject and prompt)."""
    a = {(r["subject"], r["prompt"]): r["after"] for r in bf16["rows"] if r.get("after")}
    b = {(r["subject"], r["prompt"]): r["after"] for r in float32["rows"] if r.get("after")}
    common = [k for k in a if k in b]
    facts_equal = sum(all(a[k][v] == b[k][v] for v in VERDICTS) for k in common)
    verdicts_equal = sum(a[k][v] == b[k][v] for k in common for v in VERDICTS)
    return {"facts": len(common), "facts_equal": facts_equal, "fact_agreement": facts_equal / len(common),
            "verdict_agreement": verdicts_equal / (len(common) * len(VERDICTS)),
            "differing": [k[0] for k in common if any(a[k][v] != b[k][v] for v in VERDICTS)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"record the result in {OUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    bf16, float32 = (json.loads(p.read_text()) for p in (BF16, FLOAT32))
    result = agreement(bf16, float32)
    record = {"models": {bf16["summary"]["model"]: result},
              "compared": [str(BF16.relative_to(ROOT)), str(FLOAT32.relative_to(ROOT))],
              "commands": [bf16["settings"].get("command"), float32["settings"].get("command") + " (float32 search)"],
              "command": "python benchmarks/bf16_search.py --write"}
    print(json.dumps(result))
    if args.write:
        OUT.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
