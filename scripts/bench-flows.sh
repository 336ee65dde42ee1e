#!/usr/bin/env bash
# Throughput benchmark: metaids (capture reading + flow engine + 81 features, one thread) vs
# nfstream (n_meters=1, statistical features on, nDPI off) on the same large capture, with
# peak RSS from /usr/bin/time -v. Builds the capture under /tmp from the staged captures
# (COPIES time-shifted copies with IPv4 addresses rewritten so flows differ).
# Needs: cargo, python3 with nfstream (pip install nfstream), /usr/bin/time (apt-get install time).
# Usage: scripts/bench-flows.sh [COPIES (default 1130: 5.04 M packets)]
set -euo pipefail
cd "$(dirname "$0")/.."
COPIES=${1:-1130}
PCAPS=${METAIDS_PCAPS:-../shared/data/pcaps}
[ -d "$PCAPS" ] || PCAPS=/work/shared/data/pcaps
OUT=${BENCH_PCAP:-/tmp/metaids-bench-$COPIES.pcap}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "== build (release)"
BIN=$(cargo bench -p metaids-flow --bench throughput --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="throughput" and m.get("executable"): print(m["executable"])' | tail -1)
[ -x "$BIN" ] || { echo "bench binary not built"; exit 1; }

if [ ! -s "$OUT" ]; then
  echo "== build capture $OUT"
  mapfile -t INPUTS < <(find "$PCAPS" -name '*.pcap' -o -name '*.pcapng' | sort)
  "$BIN" make "$OUT" "$COPIES" "${INPUTS[@]}"
fi
ls -l "$OUT"
cat "$OUT" > /dev/null # warm the page cache for both tools

NF=$(mktemp /tmp/nfstream-bench.XXXX.py)
cat > "$NF" <<'PY'
import sys, time
from nfstream import NFStreamer
s = NFStreamer(source=sys.argv[1], n_meters=1, statistical_analysis=True, n_dissections=0,
               idle_timeout=120, active_timeout=120, decode_tunnels=False, splt_analysis=0)
t = time.perf_counter(); flows = packets = 0
for f in s:
    flows += 1; packets += f.bidirectional_packets
secs = time.perf_counter() - t
print(f"nfstream: {packets} packets in flows, {flows} flows, {secs:.3f} s, {packets/secs:.0f} packets/s")
PY

run() { # name, command...
  local name=$1; shift
  /usr/bin/time -v "$@" > "/tmp/bench-$name.out" 2> "/tmp/bench-$name.time"
  cat "/tmp/bench-$name.out"
}
echo "== metaids"; run metaids taskset -c 0 "$BIN" run "$OUT"
echo "== metaids (+ CSV formatting)"; run metaids-csv taskset -c 0 "$BIN" run "$OUT" --csv
echo "== nfstream"; run nfstream python3 "$NF" "$OUT"
rm -f "$NF"

pps() { grep -o '[0-9]* packets/s' "/tmp/bench-$1.out" | grep -o '^[0-9]*'; }
rss() { awk '/Maximum resident/ {print $6}' "/tmp/bench-$1.time"; }
cpu() { awk -F': ' '/Percent of CPU/ {print $2}' "/tmp/bench-$1.time"; }
echo
printf '%-22s %14s %14s %8s\n' tool packets/s peak_RSS_MiB CPU
for n in metaids metaids-csv nfstream; do
  printf '%-22s %14s %14s %8s\n' "$n" "$(pps $n)" "$(( $(rss $n) / 1024 ))" "$(cpu $n)"
done
python3 -c "print(f'speed-up metaids / nfstream: {$(pps metaids)/$(pps nfstream):.1f}x')"
