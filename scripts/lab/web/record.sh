#!/usr/bin/env bash
# The web lab: sqlmap against a small shop with an SQL injection, and the shop's benign requests,
# captured into pcaps (OUT/*.pcap) for `metaids threat add/baseline/detect` with a web-request model.
#
#   sudo scripts/lab/web/record.sh OUT CSIC_DIR [SQLMAP]
#
# CSIC_DIR holds the CSIC 2010 request files (normalTrafficTraining.txt[.gz], normalTrafficTest.txt[.gz];
# not in the repo: their terms do not allow redistribution). SQLMAP is the sqlmap command (default:
# `sqlmap` on PATH; `pip install sqlmap` gives it). Everything runs in one network namespace made by
# this script and removed when it ends (also on error or Ctrl-C): the shop (app.py) on its loopback,
# dumpcap on that loopback with full snap length, the replayed benign requests and sqlmap. Nothing
# leaves the namespace. Every step is bounded: a fixed number of replayed requests, sqlmap under a
# timeout, the shop stopping after an hour at most.
#
# Captures: benign-baseline.pcap (BASELINE_REQUESTS, default 2,000, requests of normalTrafficTraining with a
# query or body; 12,000 let a baseline calibrate a per-request budget of 0.001),
# benign-test.pcap (4,000 of normalTrafficTest), sqlmap-enrol.pcap (one sqlmap run on parameter id)
# and sqlmap-test.pcap (a second run, its session flushed, at level 2 and risk 2, with the enumeration
# sqlmap does after finding the injection: banner, tables, a table dumped).
set -euo pipefail
OUT=${1:?usage: record.sh OUT CSIC_DIR [SQLMAP]}
CSIC=${2:?usage: record.sh OUT CSIC_DIR [SQLMAP]}
SQLMAP=${3:-sqlmap}
HERE=$(cd "$(dirname "$0")" && pwd)
METAIDS=${METAIDS:-$HERE/../../../target/release/metaids}
[ "$(id -u)" = 0 ] || { echo "record.sh needs root (a network namespace)" >&2; exit 1; }
command -v dumpcap >/dev/null || { echo "needs dumpcap (tshark)" >&2; exit 1; }
[ -x "$METAIDS" ] || { echo "build metaids first (cargo build --release) or set METAIDS" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NS=metaids-web-$$
PORT=8080
cleanup() {
    ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.5
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
in_ns() { ip netns exec "$NS" "$@"; }

for f in normalTrafficTraining normalTrafficTest; do
    src="$CSIC/$f.txt"; [ -f "$src" ] || src="$CSIC/$f.txt.gz"
    "$METAIDS" requests --request-file "$src" --out "$OUT/$f.jsonl" 2>/dev/null
done

in_ns timeout 3700 python3 "$HERE/app.py" --port $PORT --seconds 3600 &
sleep 1

capture() {  # capture NAME COMMAND…: the namespace's loopback while COMMAND runs
    local name=$1; shift
    # Not through in_ns (a function: `&` would fork a subshell and $! would not be dumpcap).
    ip netns exec "$NS" dumpcap -q -i lo -f "tcp port $PORT" -w "$OUT/$name.pcap" 2>/dev/null &
    local cap=$!
    sleep 1
    "$@" || echo "warning: $name: $* ended with $?" >&2
    sleep 1
    kill -INT "$cap"; wait "$cap" 2>/dev/null || true
    echo "$name: $(capinfos -c -M "$OUT/$name.pcap" 2>/dev/null | awk -F: '/packets/{gsub(/ /,"",$2); print $2}') packets"
}

URL="http://127.0.0.1:$PORT/tienda1/publico/anadir.jsp?id=1&nombre=Queso&precio=12&cantidad=2&B1=A%F1adir"
SQ=(--batch --flush-session --disable-coloring --timeout 5 --retries 1 --threads 1 --output-dir "$OUT/sqlmap")
capture benign-baseline in_ns python3 "$HERE/replay.py" "$OUT/normalTrafficTraining.jsonl" --port $PORT \
    -n "${BASELINE_REQUESTS:-2000}"
capture benign-test in_ns python3 "$HERE/replay.py" "$OUT/normalTrafficTest.jsonl" --port $PORT -n 4000
capture sqlmap-enrol in_ns timeout 600 $SQLMAP -u "$URL" -p id --technique=BEU "${SQ[@]}"
capture sqlmap-test in_ns timeout 900 $SQLMAP -u "$URL" -p id --technique=BEU --level 2 --risk 2 \
    --banner --tables --dump -T users "${SQ[@]}"
rm -f "$OUT"/*.jsonl
echo "captures in $OUT"
