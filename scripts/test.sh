#!/usr/bin/env bash
# Runs every test: unit, integration (real server, real HTTP and WebSocket, real
# PostgreSQL with one database per test), doc tests, the bindings (Kotlin, Python,
# Swift generation, Node), a TypeScript client generated from docs/openapi.json and the
# libolm interop client, each against a real server. Starts PostgreSQL if it is
# stopped, installs it if it is absent. Ends with one line: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
scripts/ensure-nats.sh
# A PgBouncer that tracks prepared statements (1.21+; Debian 12 has 1.18), for the tests
# that put a transaction pooler in front of PostgreSQL as Fly.io does. Built once, cached.
COURIER_TEST_PGBOUNCER=$(scripts/ensure-pgbouncer.sh)
export COURIER_TEST_PGBOUNCER
# The binary the image runs, built with the Dockerfile's command, for the test that
# starts it as the image does (server/tests/processes.rs).
cargo build --release --locked -p courier-server --bin courier-server
export COURIER_TEST_SERVER_BINARY="${CARGO_TARGET_DIR:-target}/release/courier-server"
# `#[sqlx::test]` creates and drops a database per test through this server.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

log=$(mktemp)
bindings_log=$(mktemp)
trap 'rm -f "$log" "$bindings_log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')

# The bindings against a real server: Kotlin and Python (uniffi; Swift generated, checked
# current, its header compiled), and the Node-API addon. Each script installs what it
# needs. Skipped when cargo test was given a filter (a focused run).
if [ "$#" -eq 0 ]; then
  # uniffi: its last line is "bindings-uniffi: N passed, M failed".
  binding_status=0
  scripts/test-bindings-uniffi.sh 2>&1 | tee "$bindings_log" || binding_status=$?
  p=$(sed -n 's/^bindings-uniffi: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$bindings_log" | tail -n1)
  f=$(sed -n 's/^bindings-uniffi: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$bindings_log" | tail -n1)
  if [ -z "$p" ]; then p=0 f=1; fi
  [ "$binding_status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
  [ "$binding_status" -ne 0 ] && status=$binding_status

  # Node: node --test reports "# pass N" and "# fail M".
  binding_status=0
  scripts/test-bindings-node.sh 2>&1 | tee "$bindings_log" || binding_status=$?
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$bindings_log" | tail -n1)
  f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$bindings_log" | tail -n1)
  if [ -z "$p" ]; then p=0 f=1; fi
  f=${f:-0}
  [ "$binding_status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
  [ "$binding_status" -ne 0 ] && status=$binding_status

  # The client generated from docs/openapi.json: its last line is
  # "openapi-client: N passed, M failed".
  binding_status=0
  scripts/test-openapi-client.sh 2>&1 | tee "$bindings_log" || binding_status=$?
  p=$(sed -n 's/^openapi-client: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$bindings_log" | tail -n1)
  f=$(sed -n 's/^openapi-client: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$bindings_log" | tail -n1)
  if [ -z "$p" ]; then p=0 f=1; fi
  [ "$binding_status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
  [ "$binding_status" -ne 0 ] && status=$binding_status

  # Interop: a libolm client (interop/python) against the SDK and the server; its last
  # line is "interop: N passed, M failed".
  binding_status=0
  scripts/test-interop.sh 2>&1 | tee "$bindings_log" || binding_status=$?
  p=$(sed -n 's/^interop: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$bindings_log" | tail -n1)
  f=$(sed -n 's/^interop: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$bindings_log" | tail -n1)
  if [ -z "$p" ]; then p=0 f=1; fi
  [ "$binding_status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
  [ "$binding_status" -ne 0 ] && status=$binding_status
fi

echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
