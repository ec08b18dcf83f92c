#!/usr/bin/env bash
# The bridge's figures (docs/scale-out.md): messages per second and publish-to-deliver
# latency at 128 B from one node of a 3-node nats-server cluster to another, against the
# same through two ternd edges bridged to those nodes (edge → cluster → edge), in one run;
# what each server process (the three nats-servers, the two edges) spent in CPU per
# message delivered across the bridge; and each half alone (edge 0 → node 0: the export;
# node 1 → edge 1: the import) with the edge's CPU per message.
#
# Usage: bench/scripts/bridge-figures.sh [DURATION] [RATES...]
#   DURATION: per throughput run (default 5s); RATES: latency runs (default 10000 50000).
# Needs target/release/{ternd,tern-bench} (make build) and nats-server (Debian's package).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${1:-5s}
shift || true
RATES=${*:-10000 50000}
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
BENCH=target/release/tern-bench
TERND=target/release/ternd
WORK=$(mktemp -d /tmp/bridge-figures.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  exit 1
}

declare -a CPORT RPORT
for i in 0 1 2; do CPORT[$i]=$(free_port); RPORT[$i]=$(free_port); done
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do
    [ "$i" = "$j" ] || routes="$routes\"nats-route://127.0.0.1:${RPORT[$j]}\","
  done
  cat > "$WORK/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${CPORT[$i]}
cluster { name: figures, listen: 127.0.0.1:${RPORT[$i]}, routes: [${routes%,}] }
CONF
  "$NATS" -c "$WORK/n$i.conf" >"$WORK/n$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 0 1 2; do wait_port "${CPORT[$i]}"; done
sleep 1 # routes

declare -a EPORT MPORT
for e in 0 1; do
  EPORT[$e]=$(free_port)
  MPORT[$e]=$(free_port)
  "$TERND" --listen "127.0.0.1:${EPORT[$e]}" --binary-listen 127.0.0.1:0 \
    --monitor "127.0.0.1:${MPORT[$e]}" \
    --data-dir "$WORK/edge$e" --bridge-name "edge$e" \
    --bridge-upstream "nats://127.0.0.1:${CPORT[$e]}" \
    --bridge-export 'bench.>' --bridge-import 'bench.>' >"$WORK/edge$e.log" 2>&1 &
  PIDS+=($!)
  wait_port "${EPORT[$e]}"
done
EDGE0_PID=${PIDS[3]}
EDGE1_PID=${PIDS[4]}

echo "# bridge figures, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $("$NATS" --version)"
run() {
  local label=$1
  shift
  echo "## $label"
  "$BENCH" "$@" | grep -E "msgs/s|p50|p99|p99.9|delivered|PROBLEM" || true
}
run "nats: node 0 → node 1, pubsub 128 B" pubsub --server "127.0.0.1:${CPORT[0]}" \
  --subscribe-server "127.0.0.1:${CPORT[1]}" --size 128 --duration "$DURATION"
# CPU seconds (user + system) each server process has used so far, in PIDS order.
cpu_ticks() { for p in "${PIDS[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done; }
before=$(cpu_ticks)
run "bridge: edge 0 → cluster → edge 1, pubsub 128 B" pubsub --server "127.0.0.1:${EPORT[0]}" \
  --subscribe-server "127.0.0.1:${EPORT[1]}" --size 128 --duration "$DURATION" \
  --server-pid "$EDGE0_PID" | tee "$WORK/bridge-run.txt"
after=$(cpu_ticks)
# What each server spent per message delivered across the bridge (the whole run, its
# drain included): where the bridged path's CPU goes, node by node.
delivered=$(awk '/delivered/ {gsub(",", "", $2); print $2; exit}' "$WORK/bridge-run.txt")
echo "## server CPU per delivered message over that run (µs)"
paste <(echo "$before") <(echo "$after") <(printf '%s\n' "nats node 0" "nats node 1" "nats node 2" "edge 0" "edge 1") |
  awk -F'\t' -v n="${delivered:-0}" '{ printf "   %-12s %8.2f s  %6.2f µs\n", $3, ($2 - $1) / 100, (n > 0 ? ($2 - $1) * 1e4 / n : 0) }'
# Each half alone: what one edge exports to, and imports from, the cluster.
half() {
  local label=$1 pid=$2
  shift 2
  local b a
  b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  run "$label" pubsub --size 128 --duration "$DURATION" "$@" | tee "$WORK/half.txt"
  a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  awk -v t=$((a - b)) '/delivered/ {gsub(",", "", $2); if ($2 > 0) printf "   edge CPU/msg %18.2f µs\n", t * 1e4 / $2; exit}' "$WORK/half.txt"
}
half "export: edge 0 → node 0, pubsub 128 B" "$EDGE0_PID" --server "127.0.0.1:${EPORT[0]}" \
  --subscribe-server "127.0.0.1:${CPORT[0]}"
half "import: node 1 → edge 1, pubsub 128 B" "$EDGE1_PID" --server "127.0.0.1:${CPORT[1]}" \
  --subscribe-server "127.0.0.1:${EPORT[1]}"
for rate in $RATES; do
  run "nats: node 0 → node 1, latency at $rate msgs/s" latency --server "127.0.0.1:${CPORT[0]}" \
    --subscribe-server "127.0.0.1:${CPORT[1]}" --size 128 --rate "$rate" --duration "$DURATION"
  run "bridge: edge 0 → edge 1, latency at $rate msgs/s" latency --server "127.0.0.1:${EPORT[0]}" \
    --subscribe-server "127.0.0.1:${EPORT[1]}" --size 128 --rate "$rate" --duration "$DURATION" \
    --server-pid "$EDGE1_PID"
done

# What each edge's bridge counted (lost or refused messages would show here).
for e in 0 1; do
  echo "## edge $e /bridgez"
  curl -s "http://127.0.0.1:${MPORT[$e]}/bridgez" | python3 -c '
import json, sys
b = json.load(sys.stdin)["bridges"][0]
keys = ["state", "connects", "disconnects", "exported", "confirmed", "resent", "unconfirmed",
        "export_gaps", "imported", "import_failed", "echoes", "overlapping", "last_error"]
print("   " + ", ".join(f"{k}={b[k]}" for k in keys))'
done
