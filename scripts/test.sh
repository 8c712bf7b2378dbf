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
suite_log=$(mktemp)
trap 'rm -f "$log" "$suite_log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')

# Runs one suite script and adds its counts to the totals. Its last line is
# "NAME: N passed, M failed" (`node --test`'s "# pass N" and "# fail M" for Node). A
# script that fails without saying how many tests failed counts as one failure.
run_counted() {
  local name=$1 script=$2 script_status=0 p f
  "$script" 2>&1 | tee "$suite_log" || script_status=$?
  if [ "$name" = node ]; then
    p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$suite_log" | tail -n1)
    f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$suite_log" | tail -n1)
  else
    p=$(sed -n "s/^$name: \([0-9]*\) passed, \([0-9]*\) failed\$/\1/p" "$suite_log" | tail -n1)
    f=$(sed -n "s/^$name: \([0-9]*\) passed, \([0-9]*\) failed\$/\2/p" "$suite_log" | tail -n1)
  fi
  if [ -z "$p" ]; then p=0 f=1; fi
  f=${f:-0}
  [ "$script_status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
  [ "$script_status" -ne 0 ] && status=$script_status
  return 0
}

# The bindings against a real server: Kotlin and Python (uniffi; Swift generated, checked
# current, its header compiled), and the Node-API addon; the TypeScript client generated
# from docs/openapi.json; the libolm interop client; the deployment kit's linters. Each
# script installs what it needs. Skipped when cargo test was given a filter (a focused
# run).
if [ "$#" -eq 0 ]; then
  run_counted bindings-uniffi scripts/test-bindings-uniffi.sh
  run_counted node scripts/test-bindings-node.sh
  run_counted openapi-client scripts/test-openapi-client.sh
  run_counted interop scripts/test-interop.sh
  run_counted lint-deploy scripts/lint-deploy.sh
fi

echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
