#!/usr/bin/env bash
# A conversation through the SDK, printed as a transcript: starts a release server on a
# free port over a fresh database, runs sdk/examples/conversation.rs against it, stops
# the server and drops the database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo build --release --locked -p courier-server
cargo build --release --locked -p courier-sdk --example conversation
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
db=courier_demo_$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
COURIER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" COURIER_LISTEN="127.0.0.1:$port" COURIER_ADMIN_LISTEN=127.0.0.1:0 COURIER_LOG=warn \
  "$target_dir/release/courier-server" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
"$target_dir/release/examples/conversation" "http://127.0.0.1:$port"
