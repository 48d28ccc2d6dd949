#!/bin/bash
# The related-entity letter (issue 39) on the lesson's ten well-known facts (workbench.ui.lesson):
# letters about the new object and about the true one, counted by whether they name the subject.
#
#   benchmarks/related_letters.sh [METHOD ...]      (default: rome in-context retrieval)
#
# One thread, passive waiting (it ran beside other work; its scores do not depend on load).
# Reports: assets/results/related/<method>.json
set -eu
cd "$(dirname "$0")/.."
methods=${*:-rome in-context retrieval}
facts=assets/results/related/lesson_facts.json
OMP_NUM_THREADS=1 .venv/bin/python - "$facts" <<'PY'
import json, sys
from workbench.ui.lesson import lesson_facts
keys = ("subject", "prompt", "target_true", "target_new", "paraphrase_prompts", "neighborhood_prompts", "case_id")
rows = [{k: (list(v) if isinstance(v, tuple) else v) for k in keys if (v := getattr(f, k)) is not None}
        for f in lesson_facts()]
json.dump(rows, open(sys.argv[1], "w"), indent=1)
PY
for m in $methods; do
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE WORKBENCH_PROGRESS=0 .venv/bin/workbench evaluate --method "$m" \
    --dataset "$facts" --metrics teacher,related --limit 10 --every 50 --perplexity-texts 1 --fluency-tokens 5 \
    --report "assets/results/related/$m.json"
done
