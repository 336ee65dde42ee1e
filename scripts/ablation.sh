#!/usr/bin/env bash
# Embedding-size × training-seed × K ablation of the meta-learned model (README, "Ablation").
# Usage: scripts/ablation.sh OUT_DIR [SHARED_DATA_DIR]   (run from the repository root; about 15 minutes
# on 2 cores), then: python3 scripts/ablation_table.py OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/ablation.sh OUT_DIR [SHARED_DATA_DIR]}
data=${2:-../shared/data}
mkdir -p "$out"
cargo build --release --locked -p metaids
bin=target/release/metaids
for ds in "nsl-kdd nsl-kdd" "unsw-nb15 unsw-nb15" "cic cic-ids2017-improved"; do
  set -- $ds
  for seed in 2026 2027 2028; do
    for emb in 16 32 64 128; do
      name="$1-e$emb-s$seed"
      "$bin" train --dataset "$1" --data "$data/$2" --out "$out/$name.model" --embedding "$emb" \
        --seed "$seed" --no-finetune --quiet > "$out/$name-train.txt" 2>&1
      # Episodes use the evaluation seed (2026) for every model: only the training seed varies.
      "$bin" evaluate --dataset "$1" --data "$data/$2" --model "$out/$name.model" \
        --methods protonet,protonet+known --shots 1,2,5,10,20 --per-family protonet \
        --json "$out/$name.json" --quiet > "$out/$name-eval.txt" 2>&1
      echo "$name done"
    done
  done
  # The budget-matched forest at the same K (independent of the model; same episodes).
  "$bin" evaluate --dataset "$1" --data "$data/$2" --methods forest+shots@budget --shots 1,2,5,10,20 \
    --json "$out/$1-forest.json" --quiet > "$out/$1-forest.txt" 2>&1
done
