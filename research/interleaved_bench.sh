#!/usr/bin/env bash
# Interleaved before/after speed check of two checkouts of ddpm_ms (a refactor that must not change speed):
#   bash research/interleaved_bench.sh BEFORE_TREE AFTER_TREE OUT_DIR [ROUNDS]
# Each round runs scripts/bench.py in BEFORE_TREE, then in AFTER_TREE (each with its own package on
# PYTHONPATH): the train step at batch 32 and the DPM-Solver++ and DDIM sampling loops at batch 64,
# graph mode, 20 timed seconds each, one process per measurement. Writes OUT_DIR/{before,after}_N.json.
set -euo pipefail
before=$(realpath "$1"); after=$(realpath "$2"); out=$(realpath -m "$3"); rounds=${4:-3}
mkdir -p "$out"
for i in $(seq 1 "$rounds"); do
  for side in before after; do
    tree=$([ "$side" = before ] && echo "$before" || echo "$after")
    echo "round $i: $side ($tree)"
    (cd "$tree" && PYTHONPATH="$tree" python scripts/bench.py train --modes graph --seconds 20 --json \
        > "$out/${side}_${i}_train.json" \
     && PYTHONPATH="$tree" python scripts/bench.py sample --modes graph --seconds 20 --samplers dpm++ ddim --json \
        > "$out/${side}_${i}_sample.json")
  done
done
