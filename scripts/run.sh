#!/usr/bin/env bash
# Runs the Courier server with local defaults: PostgreSQL on 127.0.0.1:5432 (started, or
# installed, if needed), database `courier` (created if missing), listening on
# 127.0.0.1:8080. Flags are passed on: `scripts/run.sh --help` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${COURIER_DATABASE_URL:-}${DATABASE_URL:-}" ]; then
  scripts/ensure-postgres.sh
fi
cargo build --release --locked -p courier-server
# Run the binary itself, not `cargo run`: cargo would pass on the DATABASE_URL that
# .cargo/config.toml sets for the tests, and the server would use that database.
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "$target_dir/release/courier-server" "$@"
