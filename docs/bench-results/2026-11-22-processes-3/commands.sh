#!/usr/bin/env bash
# Session 3: two processes with and without crossing (postgres fabric).
set -euo pipefail
cd "$(dirname "$0")/../../.."
T=${CARGO_TARGET_DIR:-target}/release
out=target/bench/processes-session3
mkdir -p $out
{ nproc; grep 'model name' /proc/cpuinfo | head -1; uptime; } > $out/machine.txt
common=(--mode throughput --users 40 --devices 5 --duration 30 --concurrency 128)
run() {
  local name=$1; shift
  echo "== $name: $*"
  $T/courier-loadgen --spawn-server $T/courier-server "$@" > $out/$name.json
  grep -E '"(processes|fabric|routing|messagesPerSecond|envelopesPerSecond|streamReadsByServer|lost|duplicated|p50|p99)"' $out/$name.json
  db=$(grep -o '"database": "[^"]*"' $out/$name.json | cut -d'"' -f4)
  [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
run throughput-1 "${common[@]}" --processes 1
run throughput-2-postgres "${common[@]}" --processes 2 --fabric postgres
run throughput-2-postgres-no-cross "${common[@]}" --processes 2 --fabric postgres --no-cross
rate=$(grep -o '"messagesPerSecond": [0-9.]*' $out/throughput-1.json | awk '{printf "%d", $2 / 2}')
run half-load-1 "${common[@]}" --rate "$rate" --processes 1
run half-load-2-postgres "${common[@]}" --rate "$rate" --processes 2 --fabric postgres
run half-load-2-postgres-no-cross "${common[@]}" --rate "$rate" --processes 2 --fabric postgres --no-cross
