#!/usr/bin/env bash
# Kafka scale-out throughput and latency on this machine (not a test): a broker (Tansu, see
# scripts/kafka-broker.sh), COPIES copies of data/lab's captures published once to a 12-partition
# flows topic, then
#   1. single-process `metaids detect` on the same captures (--pcap) and on the same flows as a CSV
#      (--flows), timed end to end, and once more with the worker's outputs (an alert for every
#      flagged flow, every verdict);
#   2. for 1, 2 and 4 workers (a fresh consumer group each, on the whole backlog): the verdict rate
#      from the first to the last verdict's broker timestamp (kafka-audit), every flow checked;
#   3. latency at half of one worker's rate: a sensor replays the captures at that rate
#      (--kafka-rate) to one worker; publish → verdict p50/p99 from the messages' create times.
# Needs: a `metaids` built with the Kafka client (BIN, default target/release/metaids), python3
# with pip, curl, bc.
# Usage: scripts/bench-kafka.sh [COPIES (default 10)]
set -euo pipefail
cd "$(dirname "$0")/.."
COPIES=${1:-10}
BIN=${BIN:-target/release/metaids}
[ -x "$BIN" ] || { echo "no $BIN (cargo build --release --features kafka)" >&2; exit 1; }
KAFKA_RUN=bench-kafka
# shellcheck source=scripts/kafka-common.sh
. scripts/kafka-common.sh
now() { date +%s.%N; }

"$BIN" train --dataset cic --data data/cic-ids2017 --quiet --out "$WORK/cic.model" > "$WORK/train.log" 2>&1
"$BIN" threat add --model "$WORK/cic.model" --library "$WORK/lib.redb" --name ssh \
  --pcap data/pcaps/sshguess.pcap --select "dport 22" --enrol-shots 5 --force > /dev/null
"$BIN" threat publish --library "$WORK/lib.redb" --kafka-brokers "$B" > /dev/null

mkdir -p "$WORK/pcaps"
for i in $(seq 1 "$COPIES"); do
  for f in data/lab/*.pcap.gz; do cp "$f" "$WORK/pcaps/$(printf '%03d' "$i")-$(basename "$f")"; done
done
"$BIN" extract --pcap "$WORK"/pcaps/* --kafka-brokers "$B" --flows-topic bench 2> "$WORK/sensor.err"
N=$(awk '/^published/ {print $2}' "$WORK/sensor.err")
echo "flows: $N ($COPIES copies of data/lab), topic of 12 partitions"

t0=$(now)
"$BIN" detect --model "$WORK/cic.model" --library "$WORK/lib.redb" --pcap "$WORK"/pcaps/* \
  --alerts "$WORK/d.json" --quiet > "$WORK/d.out" 2>&1
t1=$(now)
echo "detect --pcap (single process): $(echo "$N / ($t1 - $t0)" | bc) flows/s"
"$BIN" extract --pcap "$WORK"/pcaps/* --out "$WORK/flows.csv" 2> /dev/null
t0=$(now)
"$BIN" detect --model "$WORK/cic.model" --library "$WORK/lib.redb" --flows "$WORK/flows.csv" \
  --alerts "$WORK/d2.json" --quiet > "$WORK/d2.out" 2>&1
t1=$(now)
echo "detect --flows CSV (single process): $(echo "$N / ($t1 - $t0)" | bc) flows/s"
# The worker's own work: an alert for every flagged flow (no rate-limit suppression) and every verdict.
t0=$(now)
"$BIN" detect --model "$WORK/cic.model" --library "$WORK/lib.redb" --flows "$WORK/flows.csv" \
  --alerts "$WORK/d3.json" --verdicts "$WORK/d3.jsonl" --dedup-max 0 --quiet > "$WORK/d3.out" 2>&1
t1=$(now)
echo "detect --flows CSV --dedup-max 0 --verdicts (single process, the worker's outputs): $(echo "$N / ($t1 - $t0)" | bc) flows/s"

ONE=
for W in 1 2 4; do
  WP=()
  for w in $(seq "$W"); do
    "$BIN" worker --kafka-brokers "$B" --group "g$W" --flows-topic bench --alerts-topic "a$W" \
      --verdicts-topic "v$W" --model "$WORK/cic.model" --idle-exit 8 \
      > "$WORK/w$W-$w.out" 2> "$WORK/w$W-$w.err" &
    WP+=($!)
  done
  for p in "${WP[@]}"; do wait "$p"; done
  "$BIN" kafka-audit --kafka-brokers "$B" --flows-topic bench --verdicts-topic "v$W" > "$WORK/audit$W" 2>&1 || true
  rate=$(tr ' ' '\n' < "$WORK/audit$W" | awk -F= '$1=="verdict_rate_flows_per_s" {print $2}')
  [ "$W" = 1 ] && ONE=$rate
  echo "$W worker(s): $rate flows/s ($(head -1 "$WORK/audit$W"))"
done

RATE=$(echo "$ONE / 2" | bc)
"$BIN" worker --kafka-brokers "$B" --group lat --flows-topic lat --alerts-topic alat \
  --verdicts-topic vlat --model "$WORK/cic.model" --idle-exit 15 > "$WORK/wl.out" 2> "$WORK/wl.err" &
WL=$!
PIDS+=($WL)
sleep 5
"$BIN" extract --pcap "$WORK"/pcaps/* --kafka-brokers "$B" --flows-topic lat --kafka-rate "$RATE" \
  2> "$WORK/sensor-lat.err" &
SP=$!
PIDS+=($SP)
sleep 20
kill "$SP" 2>/dev/null || true
wait "$WL" || true
"$BIN" kafka-audit --kafka-brokers "$B" --flows-topic lat --verdicts-topic vlat > "$WORK/auditl" 2>&1 || true
echo "latency at $RATE flows/s (half of one worker), 20 s of replay, one worker:"
cat "$WORK/auditl"
