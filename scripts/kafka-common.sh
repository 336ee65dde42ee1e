# Sourced by scripts/kafka-e2e.sh and scripts/bench-kafka.sh (not run on its own): a work folder, a
# cleanup that kills every process in PIDS and removes it, free_port, and a broker (Tansu, see
# scripts/kafka-broker.sh) started on a free loopback port, its address in B.
scripts/kafka-broker.sh install >&2
WORK=$(mktemp -d "/tmp/metaids-${KAFKA_RUN:-kafka}.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
B=127.0.0.1:$PORT
target/tools/tansu broker --listener-url "tcp://$B" --advertised-listener-url "tcp://$B" > "$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
