#!/usr/bin/env bash
# Scoring throughput of `metaids serve` (a watched directory) against batch `metaids detect` on the
# same captures, the same model and library, one after the other on this machine. Both are timed
# end to end from process start: detect until it exits, serve until its API reports every capture
# scored (polled every 50 ms). Also measures the time from a threat enrolled while serve runs
# (`metaids threat add` changing the library file) to the reload being armed.
# Needs: curl, bc, a built `metaids` (BIN, default target/release/metaids).
# Usage: scripts/bench-serve.sh [COPIES (default 20)]   (COPIES copies of data/lab's captures)
set -euo pipefail
cd "$(dirname "$0")/.."
COPIES=${1:-20}
BIN=${BIN:-target/release/metaids}
[ -x "$BIN" ] || { echo "no $BIN (cargo build --release)"; exit 1; }
WORK=$(mktemp -d /tmp/metaids-bench-serve.XXXXXX)
trap 'kill "$SERVE_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
SERVE_PID=

echo "== model and library ($WORK)"
"$BIN" train --dataset cic --data data/cic-ids2017 --out "$WORK/cic.model" --quiet
"$BIN" threat add --model "$WORK/cic.model" --library "$WORK/lib.redb" --name ssh \
  --pcap data/pcaps/sshguess.pcap --select "dport 22" --enrol-shots 5 --force > /dev/null

echo "== captures: $COPIES copies of data/lab"
mkdir -p "$WORK/pcaps"
for i in $(seq 1 "$COPIES"); do
  for f in data/lab/*.pcap.gz; do
    cp "$f" "$WORK/pcaps/$(printf '%03d' "$i")-$(basename "$f")"
  done
done
N=$(ls "$WORK/pcaps" | wc -l)
du -sh "$WORK/pcaps"

echo "== detect (batch)"
t0=$(date +%s.%N)
"$BIN" detect --model "$WORK/cic.model" --library "$WORK/lib.redb" --pcap "$WORK"/pcaps/* \
  --alerts "$WORK/detect-eve.json" --quiet > "$WORK/detect.out" 2> "$WORK/detect.err"
t1=$(date +%s.%N)
DFLOWS=$(awk '$1=="flows"{print $2}' "$WORK/detect.out")
DT=$(echo "$t1 - $t0" | bc -l)
echo "detect: $DFLOWS flows in ${DT}s"

echo "== serve (watched directory)"
t0=$(date +%s.%N)
"$BIN" serve --model "$WORK/cic.model" --library "$WORK/lib.redb" --pcap-dir "$WORK/pcaps" \
  --eve "$WORK/serve-eve.json" --listen 127.0.0.1:0 --settle-ms 0 --poll-ms 50 \
  --stats-interval 0 --max-runtime 900 > "$WORK/serve.out" 2> "$WORK/serve.err" &
SERVE_PID=$!
for _ in $(seq 1 600); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/.*listening on //p' "$WORK/serve.out")
for _ in $(seq 1 18000); do
  done_n=$(curl -s "$URL/api/v1/ready" | sed -n 's/.*"files_done":\([0-9]*\).*/\1/p')
  [ "${done_n:-0}" -ge "$N" ] && break
  sleep 0.05
done
t1=$(date +%s.%N)
SFLOWS=$(curl -s "$URL/metrics" | awk '$1=="metaids_flows_total"{print $2}')
ST=$(echo "$t1 - $t0" | bc -l)
echo "serve: $SFLOWS flows in ${ST}s"

echo "== enrolment while serving: library change to reload armed"
V0=$(curl -s "$URL/api/v1/ready" | sed -n 's/.*"library_version":\([0-9]*\).*/\1/p')
"$BIN" threat add --model "$WORK/cic.model" --library "$WORK/lib.redb" --name ftp \
  --pcap data/pcaps/ftp-bruteforce.pcap --select "dport 21" --enrol-shots 5 --force > /dev/null
t0=$(date +%s.%N)
for _ in $(seq 1 2000); do
  v=$(curl -s "$URL/api/v1/ready" | sed -n 's/.*"library_version":\([0-9]*\).*/\1/p')
  [ "${v:-0}" -gt "$V0" ] && break
  sleep 0.005
done
t1=$(date +%s.%N)
RT=$(echo "($t1 - $t0) * 1000" | bc -l)
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=
printf 'captures %d, flows detect %s serve %s\n' "$N" "$DFLOWS" "$SFLOWS"
printf 'detect %.2f s (%.0f flows/s), serve %.2f s (%.0f flows/s), serve/detect time %.3f\n' \
  "$DT" "$(echo "$DFLOWS / $DT" | bc -l)" "$ST" "$(echo "$SFLOWS / $ST" | bc -l)" "$(echo "$ST / $DT" | bc -l)"
printf 'library change (after threat add returned) to reload armed: %.0f ms (serve idle, polling every 50 ms)\n' "$RT"
