#!/usr/bin/env bash
# Scoring throughput of `metaids serve` (a watched directory) against batch `metaids detect` on the
# same captures, the same model and library, one after the other on this machine. Both are timed
# end to end from process start: detect until it exits, serve until the time stamp of its log line
# for the last capture scored (its API is polled every 0.25 s to notice the end; the time stamp, not
# the poll, gives the time). Then, with serve running: a threat enrolled through the API
# (POST /api/v1/threats with an FTP brute-force capture), the time until the worker has armed it,
# and the time from dropping a capture of that attack into the directory to its first alert.
# Last, API reads at LOAD_RATE requests/s (default 5000) for LOAD_SECONDS (default 8) while serve
# scores every capture again (crates/serve/benches/api_load.rs: open loop, latency from due time).
# Needs: curl, bc, a built `metaids` (BIN, default target/release/metaids).
# Usage: scripts/bench-serve.sh [COPIES (default 20)]   (COPIES copies of data/lab's captures;
#   with MERGE=1 each copy's captures are concatenated into one file by mergecap: fewer, larger
#   captures, as a rotating tcpdump writes them)
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
  if [ "${MERGE:-0}" = 1 ]; then
    mergecap -a -F pcap -w "$WORK/pcaps/$(printf '%03d' "$i")-lab.pcap" data/lab/*.pcap.gz
  else
    for f in data/lab/*.pcap.gz; do
      cp "$f" "$WORK/pcaps/$(printf '%03d' "$i")-$(basename "$f")"
    done
  fi
done
N=$(ls "$WORK/pcaps" | wc -l)
du -sh "$WORK/pcaps"

printf 'bench write %s\n' "bench-token-$(date +%s%N)" > "$WORK/tokens"
TOKEN=$(awk '{print $3}' "$WORK/tokens")
AUTH="Authorization: Bearer $TOKEN"
ready() { curl -s -H "$AUTH" "$URL/api/v1/ready"; }

run_detect() {
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" detect --model "$WORK/cic.model" --library "$WORK/lib.redb" --pcap "$WORK"/pcaps/* \
    --alerts "$WORK/detect-eve.json" --quiet > "$WORK/detect.out" 2> "$WORK/detect.err"
  t1=$(date +%s.%N)
  DFLOWS=$(awk '$1=="flows"{print $2}' "$WORK/detect.out")
  DT=$(echo "$t1 - $t0" | bc -l)
}

# Starts serve on a fresh EVE and progress file and waits for its API (sets SERVE_PID and URL).
start_serve() {
  rm -f "$WORK/serve-eve.json" "$WORK/serve-eve.json.state.json"
  METAIDS_LOG=info "$BIN" serve --model "$WORK/cic.model" --library "$WORK/lib.redb" --pcap-dir "$WORK/pcaps" \
    --eve "$WORK/serve-eve.json" --listen 127.0.0.1:0 --settle-ms 0 --poll-ms 50 --tokens "$WORK/tokens" \
    --stats-interval 0 --max-runtime 900 > "$WORK/serve.out" 2> "$WORK/serve.err" &
  SERVE_PID=$!
  for _ in $(seq 1 600); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.05; done
  URL=$(sed -n 's/.*listening on //p' "$WORK/serve.out")
}

# Waits until serve reports every capture scored (polled every 0.25 s: the time itself is read
# from serve's log, so the poll only has to notice the end, and a fast poll would take CPU from it).
wait_scored() {
  local done_n
  for _ in $(seq 1 3600); do
    done_n=$(ready | sed -n 's/.*"files_done":\([0-9]*\).*/\1/p')
    [ "${done_n:-0}" -ge "$N" ] && break
    sleep 0.25
  done
}

# Seconds from $1 (date +%s.%N) to the time stamp of serve's last "capture scored" log line.
scored_since() {
  local last
  last=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/serve.err" | grep 'capture scored' | tail -1 | cut -d' ' -f1)
  echo "$(date -d "$last" +%s.%N) - $1" | bc -l
}

# Times serve from process start until its log says the last capture is scored (serve keeps
# running for the enrolment measurement of the last round).
run_serve() {
  local t0
  t0=$(date +%s.%N)
  start_serve
  wait_scored
  SFLOWS=$(curl -s -H "$AUTH" "$URL/metrics" | awk '$1=="metaids_flows_total"{print $2}')
  ST=$(scored_since "$t0")
}

REPEAT=${REPEAT:-3}
for r in $(seq 1 "$REPEAT"); do
  run_detect
  if [ -n "$SERVE_PID" ]; then kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=; fi
  run_serve
  printf 'round %d: detect %s flows in %.2f s, serve %s flows in %.2f s\n' "$r" "$DFLOWS" "$DT" "$SFLOWS" "$ST"
  DTS+=("$DT"); STS+=("$ST")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
DT=$(median "${DTS[@]}"); ST=$(median "${STS[@]}")

echo "== enrolment through the API while serving"
V0=$(ready | sed -n 's/.*"library_version":\([0-9]*\).*/\1/p')
curl -s -o "$WORK/enrol.json" -w '%{http_code} %{time_total}s\n' -H "$AUTH" \
  -H 'Content-Type: application/vnd.tcpdump.pcap' --data-binary @data/pcaps/ftp-bruteforce.pcap \
  "$URL/api/v1/threats?name=ftp&select=dport%2021&shots=5&force=true"
t0=$(date +%s.%N)
for _ in $(seq 1 4000); do
  v=$(ready | sed -n 's/.*"library_version":\([0-9]*\).*/\1/p')
  [ "${v:-0}" -gt "$V0" ] && break
  sleep 0.002
done
t1=$(date +%s.%N)
ARMED=$(echo "($t1 - $t0) * 1000" | bc -l)
cp data/pcaps/ftp-bruteforce.pcap "$WORK/.ftp.pcap"
t0=$(date +%s.%N)
mv "$WORK/.ftp.pcap" "$WORK/pcaps/zzz-ftp.pcap"
for _ in $(seq 1 4000); do
  n=$(curl -s -H "$AUTH" "$URL/metrics" | awk '$1=="metaids_alerts_total{threat=\"ftp\"}"{print $2}')
  [ "${n:-0}" -ge 1 ] && break
  sleep 0.002
done
t1=$(date +%s.%N)
ALERT=$(echo "($t1 - $t0) * 1000" | bc -l)
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=
rm -f "$WORK/pcaps/zzz-ftp.pcap"

echo "== API reads while scoring"
LOAD=$(cargo bench -p metaids-serve --bench api_load --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="api_load" and m.get("executable"): print(m["executable"])' | tail -1)
[ -x "$LOAD" ] || { echo "api_load not built"; exit 1; }
LOAD_RATE=${LOAD_RATE:-5000}; LOAD_SECONDS=${LOAD_SECONDS:-8}
printf 'loader read %s\n' "bench-read-$(date +%s%N)" >> "$WORK/tokens"
READ_TOKEN=$(awk '$2=="read"{print $3}' "$WORK/tokens")
t0=$(date +%s.%N)
start_serve
# The load runs beside the scoring; the scoring time is taken when the last capture is scored,
# whether or not the load has ended.
"$LOAD" "$URL" "$READ_TOKEN" "$LOAD_RATE" "$LOAD_SECONDS" > "$WORK/load.txt" &
LOAD_PID=$!
wait_scored
LT=$(scored_since "$t0")
wait "$LOAD_PID"
cat "$WORK/load.txt"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=
printf 'serve scored every capture in %.2f s with the reads above running beside it for the first %s s (%.2f s without them)\n' "$LT" "$LOAD_SECONDS" "$ST"
printf 'captures %d, flows detect %s serve %s\n' "$N" "$DFLOWS" "$SFLOWS"
printf 'median of %d rounds: detect %.2f s (%.0f flows/s), serve %.2f s (%.0f flows/s), serve/detect time %.3f\n' "$REPEAT" \
  "$DT" "$(echo "$DFLOWS / $DT" | bc -l)" "$ST" "$(echo "$SFLOWS / $ST" | bc -l)" "$(echo "$ST / $DT" | bc -l)"
printf 'enrolment returned to threat armed: %.0f ms; capture dropped to its first alert: %.0f ms (directory polled every 50 ms)\n' "$ARMED" "$ALERT"
