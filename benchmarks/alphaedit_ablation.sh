#!/bin/bash
# Issue 44's ablation: AlphaEdit as published on 300 sequential edits in batches of 100, one
# published choice changed at a time, beside MEMIT and MEMIT + kept keys in the same setting.
#
# Every run is the first 300 edits of a 1,000-edit run (--limit 1000 --stop-after 300), so its
# point at 300 is scored as the 1,000-edit curves score theirs (a fixed sample of 200 of the facts
# edited so far), and the three runs of the published recipes are those curves themselves:
# alphaedit-paper_b100 and memit_b100 (already past 300) and memit-kept_b100 (run here to 300;
# the same command without --stop-after takes it on to 1,000). Each run keeps a checkpoint after
# every 100 edits: rerun this script and every run goes on from where it stopped; finished ones
# are not run again.
#
#   benchmarks/alphaedit_ablation.sh [SECONDS_PER_RUN]
#
# One thread, passive waiting, so that it can run beside other work (its seconds are loaded
# ones). Variants: assets/results/sequential_1k/ablation/alphaedit-paper_b100_ablation-<name>.json
# (a subfolder: the many-edits figure shows the 1,000-edit runs only). Table:
# python benchmarks/many_edits_table.py --docs
set -u
cd "$(dirname "$0")/.."
limit=${1:-7200}
run() {  # run OUT_FILE METHOD HPARAMS_JSON [sequential_curves.py options...]
  out=$1 method=$2 hparams=$3
  shift 3
  if [ -f "$out" ] && python3 -c "import json,sys; sys.exit(json.load(open('$out'))['curve'][-1]['n_edits'] < 300)"; then
    return  # reached 300
  fi
  WORKBENCH_THREADS=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sequential_curves.py \
    --methods "$method" --batch-size 100 --limit 1000 --every 100 --stop-after 300 --time-limit "$limit" \
    --hparams "$hparams" "$@" || echo "alphaedit_ablation.sh: $out stopped with status $?" >&2
}
curves=assets/results/sequential_1k
run $curves/alphaedit-paper_b100.json alphaedit-paper '{}'
run $curves/memit_b100.json memit '{}'
run $curves/memit-kept_b100.json memit-kept '{}'
variant() {  # variant NAME HPARAMS_JSON
  run $curves/ablation/alphaedit-paper_b100_ablation-$1.json alphaedit-paper "$2" --subdir ablation --tag "ablation-$1"
}
variant cut-1e-3 '{"null_cut": 0.001}'         # fewer free directions than the code's 2e-2
variant samples-20k '{"samples": 20000}'       # C over the default 20,000 tokens
variant no-bos '{"stats_bos": false}'          # BOS positions left out of C
variant l2-1 '{"l2": 1.0}'                     # a tenth of the published L2
variant window-memit '{"layers": [0, 1, 2, 3, 4]}'  # MEMIT's window (layers 0-4 here) instead of the mapped 2-6
variant window-3-7 '{"layers": [3, 4, 5, 6, 7]}'    # one layer later: after 999 edits layer 2's update did most of the damage (bos_restore.py --per-layer)
