#!/usr/bin/env bash
# Runs a command against a real Courier server of its own: a fresh PostgreSQL database
# (`courier_bindings_<random>` on the shared cluster), the server built from this
# checkout listening on a free port, `COURIER_TEST_SERVER` set to its URL. Stops the
# server and drops the database afterwards, whatever the command's outcome; exits with
# the command's status. The binding tests (Kotlin, Python, Node) run under it.
#
#   scripts/with-test-server.sh python3 -m pytest bindings/ffi/tests/python
#
# Settings for the server: COURIER_DEVICE_LIMIT (default 3 here, so a test reaches the
# limit with few logins), rate limits off (the tests register many accounts from one
# address; the limits have their own tests). Set COURIER_SERVER_BIN to use a built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

admin_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
database="courier_bindings_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
base="${admin_url%/*}"

if [ -z "${COURIER_SERVER_BIN:-}" ]; then
  cargo build --quiet --locked -p courier-server
  target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  COURIER_SERVER_BIN="$target_dir/debug/courier-server"
fi

psql "$admin_url" -qAt -c "CREATE DATABASE $database" >/dev/null
log=$(mktemp)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  psql "$admin_url" -qAt -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT

COURIER_DATABASE_URL="$base/$database" \
COURIER_LISTEN=127.0.0.1:0 COURIER_ADMIN_LISTEN=127.0.0.1:0 \
COURIER_DEVICE_LIMIT="${COURIER_DEVICE_LIMIT:-3}" \
COURIER_RATE_LIMITS=off \
COURIER_LOG_FORMAT=text \
NO_COLOR=1 \
COURIER_LOG="${COURIER_LOG:-warn,courier_server=info}" \
  "$COURIER_SERVER_BIN" >"$log" 2>&1 &
server_pid=$!

# The server logs the address it bound ("Courier is listening address=127.0.0.1:PORT").
address=""
for _ in $(seq 1 300); do
  address=$(sed -n 's/.*Courier is listening.*address=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
  [ -n "$address" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "with-test-server: the server exited before listening:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "with-test-server: the server did not report its address within 30 s:" >&2
  cat "$log" >&2
  exit 1
fi

export COURIER_TEST_SERVER="http://$address"
status=0
"$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "with-test-server: the command failed ($status); the server's log:" >&2
  tail -n 50 "$log" >&2
fi
exit "$status"
