#!/usr/bin/env bash
# CPU time per message of PostgreSQL (all its processes) and of the server, counted from
# when the load generator starts sending (account set-up excluded), at a fixed rate.
# CPU time, unlike throughput, hardly moves with the machine's background noise, so
# this is the number to compare two builds by.
#   scripts/bench/cpu-per-message.sh [SERVER_BINARY] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/courier-server}
rate=${2:-500}
seconds=${3:-15}
db=courier_cpu_$$
. scripts/bench/spawn-server.sh

ticks() { # utime + stime, in clock ticks, of the given PIDs
  local total=0 pid
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done
  echo "$total"
}
target/release/courier-loadgen --server "http://127.0.0.1:$port" --metrics-server "http://127.0.0.1:$metrics_port" --mode throughput --users 40 --devices 5 \
  --duration "$seconds" --concurrency 64 --rate "$rate" >"$work/out.json" 2>"$work/err" &
loadgen=$!
until grep -q "loadgen: sending" "$work/err" 2>/dev/null; do sleep 0.05; done
pg0=$(ticks $(pgrep -x postgres)); s0=$(ticks "$server")
wait "$loadgen"
pg1=$(ticks $(pgrep -x postgres)); s1=$(ticks "$server")
hz=$(getconf CLK_TCK)
messages=$(grep -o '"messagesSent": [0-9]*' "$work/out.json" | awk '{print $2}')
p50=$(grep -o '"p50": [0-9.]*' "$work/out.json" | head -1 | awk '{print $2}')
p99=$(grep -o '"p99": [0-9.]*' "$work/out.json" | head -1 | awk '{print $2}')
awk -v pg=$((pg1 - pg0)) -v s=$((s1 - s0)) -v m="$messages" -v hz="$hz" -v rate="$rate" -v p50="$p50" -v p99="$p99" 'BEGIN {
  printf "{\"rate\": %d, \"messages\": %d, \"postgresCpuMsPerMessage\": %.3f, \"serverCpuMsPerMessage\": %.3f, \"p50Ms\": %s, \"p99Ms\": %s}\n",
    rate, m, pg * 1000 / hz / m, s * 1000 / hz / m, p50, p99 }'
