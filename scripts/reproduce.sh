#!/usr/bin/env bash
# Regenerates the novel-family evaluation tables of README.md: every dataset × leave-families-out fold,
# models trained with three seeds inside `metaids evaluate --train-seeds`, the baselines on the same
# episodes, paired differences against the best baseline. Writes one JSON, one Markdown table and one
# per-episode CSV per dataset and fold into OUT, prints each step's wall time and, at the end, the
# K = 5 summary (headline model row against the best baseline).
#
#   scripts/reproduce.sh [OUT]                  (default OUT: reproduce-out)
#
# Environment: DATA (default ../shared/data), EPISODES (100), SEEDS (1,2,3), FOLDS ("0 1 2"),
# DATASETS ("cic unsw-nb15 nsl-kdd http-requests"), METAIDS (default target/release/metaids, built if missing).
# Needs python3 for the closing summary. Speed benches, the demo, site-eval and the lab have their own
# commands (README, each figure's section); this script covers the evaluation tables only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-reproduce-out}
DATA=${DATA:-../shared/data}
EPISODES=${EPISODES:-100}
SEEDS=${SEEDS:-1,2,3}
FOLDS=${FOLDS:-0 1 2}
DATASETS=${DATASETS:-cic unsw-nb15 nsl-kdd http-requests}
METAIDS=${METAIDS:-target/release/metaids}
METHODS=protonet,protonet+finetune,nearest-centroid,knn+shots,forest+shots,forest+shots@budget
if [ ! -x "$METAIDS" ]; then
    cargo build --release --locked -p metaids
fi
mkdir -p "$OUT"
dir_of() {
    case "$1" in
        cic) echo "$DATA/cic-ids2017-improved" ;;
        http-requests) echo "data/http" ;;  # vendored (MIT), not in ../shared
        *) echo "$DATA/$1" ;;
    esac
}
started=$(date +%s)
for d in $DATASETS; do
    for f in $FOLDS; do
        # The web-request payload families have one split so far (fold 0).
        if [ "$d" = http-requests ] && [ "$f" != 0 ]; then continue; fi
        t0=$(date +%s)
        name="$d-fold$f"
        methods="$METHODS"
        # Web-request payloads also get the classical text baselines (TF-IDF with logistic
        # regression and with a forest) and libinjection's signatures.
        if [ "$d" = http-requests ]; then methods="$METHODS,tfidf-logreg+shots@budget,tfidf-forest+shots@budget,libinjection"; fi
        "$METAIDS" evaluate --dataset "$d" --data "$(dir_of "$d")" --fold "$f" \
            --train-seeds "$SEEDS" --episodes "$EPISODES" --methods "$methods" --quiet \
            --json "$OUT/$name.json" --episodes-csv "$OUT/$name.csv" \
            > "$OUT/$name.md" 2> "$OUT/$name.log"
        echo "$name: $(( $(date +%s) - t0 )) s"
    done
done
echo "total: $(( $(date +%s) - started )) s for datasets [$DATASETS], folds [$FOLDS], seeds $SEEDS, $EPISODES episodes"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("\n| dataset · fold | headline row | PR-AUC | recall @ FPR 0.001 (own calibration) | best baseline PR-AUC | paired Δ PR-AUC | paired Δ recall @ 0.001 (own) |")
print("|---|---|---|---|---|---|---|")
for path in sorted(out.glob("*.json")):
    r = json.loads(path.read_text())
    k5 = [m for m in r["results"] if m["shots"] == 5]
    head = next((m for m in k5 if m.get("headline")), None)
    if head is None:
        continue
    o = head["operating"]
    own = (o.get("recall_at_fpr") or {}).get("0.001")
    pairs = {p["metric"]: p for p in r.get("paired", []) if p["method"] == head["method"] and p["shots"] == 5}
    fmt = lambda s: f'{s["mean"]:.3f} ± {s["ci95"]:.3f}' if s else "—"
    d = lambda m: (f'{pairs[m]["difference"]["mean"]:+.3f} ± {pairs[m]["difference"]["ci95"]:.3f} (vs {pairs[m]["baseline"]})' if m in pairs else "—")
    best = max((m["operating"]["pr_auc"]["mean"] for m in k5 if not m.get("model_row")), default=float("nan"))
    print(f'| {path.stem} | {head["method"]} | {fmt(o["pr_auc"])} | {fmt(own)} | {best:.3f} | {d("pr_auc")} | {d("recall_at_fpr_0.001")} |')
PY
