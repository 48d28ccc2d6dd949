#!/bin/bash
# The critics' measures (issue 39: greedy answers judged, the question form, CounterFact+, NKL)
# for every method on the first 200 bundled known facts, one method after another, each
# resumable: rerun this script and every run goes on from its report
# (assets/results/<method>_independent_critics.json; ROME's, in-context's and retrieval's are done).
#
#   benchmarks/critics.sh [SECONDS_PER_METHOD] [METHOD ...]
#
# One thread, passive waiting, so that it can run beside other work (its seconds per edit are
# then loaded seconds; its scores are not affected). results.py rewrites docs/results.md's
# tables after each method.
set -u
cd "$(dirname "$0")/.."
limit=${1:-3000}
shift || true
methods=${*:-memit pmet emmet alphaedit ft kn grace wise}
for m in $methods; do
  resume=()
  [ -f "assets/results/${m}_independent_critics.json" ] && resume=(--resume)
  WORKBENCH_THREADS=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/results.py \
    --methods "$m" --modes independent --every 20 --no-sweep --limit 200 --time-limit "$limit" --tag critics \
    "${resume[@]}" || echo "critics.sh: $m stopped with status $?" >&2
done
