#!/bin/bash
# The letter test (issue 39) for every method on the first 200 bundled known facts, one method
# after another, each resumable: rerun this script and every run goes on from its report.
#
#   benchmarks/letters.sh [SECONDS_PER_METHOD] [METHOD ...]
#
# One thread, passive waiting, so that it can run beside other work (its seconds per edit are
# then loaded seconds; its scores are not affected). Reports: assets/results/letters/<method>_independent.json
# (WISE and AlphaEdit as published, wise-paper and alphaedit-paper, come last: added after the others had run).
set -u
cd "$(dirname "$0")/.."
limit=${1:-2400}
shift || true
methods=${*:-rome in-context retrieval memit alphaedit emmet pmet ft grace wise kn wise-paper alphaedit-paper}
mkdir -p assets/results/letters
for m in $methods; do
  out=assets/results/letters/${m}_independent.json
  resume=()
  [ -f "$out" ] && resume=(--resume "$out")
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE WORKBENCH_PROGRESS=0 .venv/bin/workbench evaluate --method "$m" \
    --dataset assets/known_facts.json --metrics teacher,letter --limit 200 --every 50 \
    --perplexity-texts 4 --fluency-tokens 20 --time-limit "$limit" --report "$out" "${resume[@]}" \
    || echo "letters.sh: $m stopped with status $?" >&2
done
