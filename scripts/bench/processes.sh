#!/usr/bin/env bash
# One server process against two on one database (docs/benchmarks.md, "Two processes"),
# in one session so the runs compare:
#   scripts/bench/processes.sh [seconds]     (default 30 per run)
# Throughput (the issue 3 command: 40 users x 5 devices, 9 envelopes per message, 128 in
# flight) for 1 process, 2 over PostgreSQL, 2 over NATS; then latency for the same three
# at one fixed rate: half of what the single process reached. With two processes each
# user's sockets are on one process and its messages go through the other, so every
# envelope crosses processes. JSON reports go to target/bench/processes/.
# Needs PostgreSQL and NATS (both started, or installed, if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-postgres.sh
scripts/ensure-nats.sh
duration=${1:-30}
out=target/bench/processes
mkdir -p "$out"
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p courier-server -p courier-loadgen
server=$target/release/courier-server
loadgen=$target/release/courier-loadgen

{ nproc; grep 'model name' /proc/cpuinfo | head -1; free -g | head -2; uptime; } | tee "$out/machine.txt"

common=(--mode throughput --users 40 --devices 5 --duration "$duration" --concurrency 128)
run() {
  local name=$1; shift
  echo "== $name: $*"
  "$loadgen" --spawn-server "$server" "$@" >"$out/$name.json"
  grep -E '"(processes|fabric|messagesPerSecond|envelopesPerSecond|streamReadsByServer|lost|duplicated|p50|p99)"' "$out/$name.json"
  local db
  db=$(grep -o '"database": "[^"]*"' "$out/$name.json" | cut -d'"' -f4)
  [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
run throughput-1 "${common[@]}" --processes 1
run throughput-2-postgres "${common[@]}" --processes 2 --fabric postgres
run throughput-2-nats "${common[@]}" --processes 2 --fabric nats
rate=$(grep -o '"messagesPerSecond": [0-9.]*' "$out/throughput-1.json" | awk '{printf "%d", $2 / 2}')
run half-load-1 "${common[@]}" --rate "$rate" --processes 1
run half-load-2-postgres "${common[@]}" --rate "$rate" --processes 2 --fabric postgres
run half-load-2-nats "${common[@]}" --rate "$rate" --processes 2 --fabric nats
