#!/usr/bin/env bash
# Where a message's write-ahead log goes: runs the load generator at a fixed rate against
# a server on a fresh database, then reads the WAL of the run with pg_waldump and sums it
# by relation and record kind, per message. Also prints the send writer's latency
# histograms from /metrics (courier_send_*), which show whether sends wait for their own
# batch or for something else.
#   scripts/bench/wal-per-message.sh [SERVER_BINARY] [RATE] [SECONDS]
# Reads PostgreSQL's pg_wal directory, so it must run as root or as the postgres user, on
# the database's machine (the development set-up of scripts/ensure-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/courier-server}
rate=${2:-1111}
seconds=${3:-10}
admin="postgres://postgres@127.0.0.1:5432/postgres"
db=courier_wal_$$
. scripts/bench/spawn-server.sh
q() { psql "$admin" -Atc "$1"; }

target/release/courier-loadgen --server "http://127.0.0.1:$port" --metrics-server "http://127.0.0.1:$metrics_port" --mode throughput --users 40 --devices 5 \
  --duration "$seconds" --concurrency 128 --rate "$rate" >"$work/out.json" 2>"$work/err" &
loadgen=$!
until grep -q "loadgen: sending" "$work/err" 2>/dev/null; do sleep 0.05; done
start=$(q "SELECT pg_current_wal_lsn()")
wait "$loadgen"
end=$(q "SELECT pg_current_wal_lsn()")
curl -sf "http://127.0.0.1:$metrics_port/metrics" | grep -E '^courier_send_' >"$work/metrics" || true
psql "postgres://postgres@127.0.0.1:5432/$db" -Atc \
  "SELECT relfilenode, relname FROM pg_class WHERE relfilenode <> 0" >"$work/relations"

bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
"$bindir/pg_waldump" -p "$(q 'SHOW data_directory')/pg_wal" -s "$start" -e "$end" >"$work/wal" 2>/dev/null || true

python3 - "$work" <<'PY'
import collections, json, re, sys
work = sys.argv[1]
report = json.load(open(f"{work}/out.json"))
messages = report["messagesSent"]
names = dict(line.rstrip("\n").split("|", 1) for line in open(f"{work}/relations"))
total, records = collections.Counter(), collections.Counter()
for line in open(f"{work}/wal"):
    m = re.search(r"rmgr: (\w+)\s+len \(rec/tot\):\s+\d+/\s*(\d+).*?desc: (\w+)", line)
    if not m:
        continue
    rel = re.search(r"rel \d+/\d+/(\d+)", line)
    key = (names.get(rel.group(1), rel.group(1)) if rel else "-", m.group(1), m.group(3))
    total[key] += int(m.group(2))
    records[key] += 1
print(f"messages {messages}, WAL {sum(total.values()) / messages:,.0f} bytes and "
      f"{sum(records.values()) / messages:.1f} records per message")
print(f"{'bytes/msg':>10} {'records/msg':>12}  relation, resource manager, record")
for key, size in total.most_common(20):
    print(f"{size / messages:10.0f} {records[key] / messages:12.2f}  {', '.join(key)}")
latency = report["latencyMs"]
print("send-to-receive ms: p50 {p50} p95 {p95} p99 {p99} max {max}".format(**latency))
buckets = collections.defaultdict(list)
sums, counts = {}, {}
for line in open(f"{work}/metrics"):
    m = re.match(r'(\w+)_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        buckets[m.group(1)].append((m.group(2), int(m.group(3))))
        continue
    m = re.match(r"(\w+)_(sum|count) (\S+)", line)
    if m:
        (sums if m.group(2) == "sum" else counts)[m.group(1)] = float(m.group(3))
for name, rows in buckets.items():
    n = counts.get(name) or 1
    shares = " ".join(f"<={le}s:{c / n:.1%}" for le, c in rows if le in ("0.005", "0.01", "0.025", "0.05", "0.1"))
    print(f"{name}: {n:.0f} observed, mean {sums[name] / n * 1000:.2f} ms, {shares}")
PY
