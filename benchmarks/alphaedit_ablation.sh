#!/bin/bash
# Issue 44's ablation: AlphaEdit as published on 300 sequential edits in batches of 100, one
# published choice changed at a time, beside MEMIT and MEMIT + kept keys in the same setting.
# Each run keeps a checkpoint after every 100 edits (sequential_curves.py): rerun this script
# and every run goes on from where it stopped; finished ones are not run again.
#
#   benchmarks/alphaedit_ablation.sh [SECONDS_PER_RUN]
#
# One thread, passive waiting, so that it can run beside other work (its seconds are loaded
# ones). Curves: assets/results/sequential_1k/<method>_b100_ablation-<name>.json
set -u
cd "$(dirname "$0")/.."
limit=${1:-7200}
run() {  # run NAME METHOD HPARAMS_JSON
  out=assets/results/sequential_1k/${2}_b100_ablation-${1}.json
  if [ -f "$out" ] && python3 -c "import json,sys; sys.exit(json.load(open('$out'))['curve'][-1]['n_edits'] < 300)"; then
    return  # finished
  fi
  WORKBENCH_THREADS=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sequential_curves.py \
    --methods "$2" --batch-size 100 --limit 300 --every 100 --time-limit "$limit" --hparams "$3" \
    --tag "ablation-$1" || echo "alphaedit_ablation.sh: $1 stopped with status $?" >&2
}
run published alphaedit-paper '{}'
run memit memit '{}'
run memit-kept memit-kept '{}'
run cut-1e-3 alphaedit-paper '{"null_cut": 0.001}'         # fewer free directions than the code's 2e-2
run samples-20k alphaedit-paper '{"samples": 20000}'       # C over the default 20,000 tokens
run no-bos alphaedit-paper '{"stats_bos": false}'         # BOS positions left out of C
run l2-1 alphaedit-paper '{"l2": 1.0}'                      # a tenth of the published L2
run window-memit alphaedit-paper '{"layers": [0, 1, 2, 3, 4]}'  # MEMIT's window (layers 0-4 here) instead of the mapped 2-6
