#!/usr/bin/env bash
# Server benchmarks (docs/benchmarks.md): a pgbench baseline of raw batched inserts, then
# the load generator against a release server on a fresh database, in one run.
#   scripts/bench-server.sh [quick]
# Writes JSON reports to target/bench/. `quick` runs each mode briefly (a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
out=target/bench
mkdir -p "$out"
cargo build --release --locked -p courier-server -p courier-loadgen
server=target/release/courier-server
loadgen=target/release/courier-loadgen
duration=60; sockets=10000; backlog=10000
if [ "${1:-}" = quick ]; then duration=5; sockets=500; backlog=1000; fi

echo "== machine"
{ nproc; grep 'model name' /proc/cpuinfo | head -1; free -g | head -2; psql -h 127.0.0.1 -U postgres -Atc 'show server_version; show synchronous_commit; show fsync'; } | tee "$out/machine.txt"

echo "== pgbench baseline: 9-row INSERT ... SELECT per transaction, 8 clients, ${duration}s"
psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS courier_pgbench' -c 'CREATE DATABASE courier_pgbench'
psql -h 127.0.0.1 -U postgres -q -d courier_pgbench -f scripts/bench/pgbench-setup.sql
pgbench -h 127.0.0.1 -U postgres -n -c 8 -j 2 -T "$duration" -f scripts/bench/pgbench-envelopes.sql courier_pgbench | tee "$out/pgbench.txt"
psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS courier_pgbench'

# Each run's loadgen drops its fresh courier_bench_* database itself when it ends.
run() {
  local name=$1; shift
  echo "== loadgen $name: $*"
  "$loadgen" --spawn-server "$server" "$@" | tee "$out/$name.json"
}
run throughput --mode throughput --users 40 --devices 5 --duration "$duration" --concurrency 128
rate=$(grep -o '"messagesPerSecond": [0-9.]*' "$out/throughput.json" | awk '{printf "%d", $2 / 2}')
run half-load --mode throughput --users 40 --devices 5 --duration "$duration" --concurrency 128 --rate "$rate"
run offline --mode offline --backlog "$backlog" --concurrency 32
run idle --mode idle --sockets "$sockets" --devices 100 --settle-seconds 15
# Issue 13: silent TCP connections, a reconnect storm (idle opens every socket at once).
run raw-tcp --mode raw-tcp --sockets "$sockets"
run storm --mode storm --sockets $((sockets * 3 / 10)) --devices 5 --backlog-per-device 10
