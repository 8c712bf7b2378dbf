#!/usr/bin/env bash
# Runs the Courier server with local defaults: PostgreSQL on 127.0.0.1:5432 (started, or
# installed, if needed), database `courier` (created if missing), listening on
# 127.0.0.1:8080. Flags are passed on: `scripts/run.sh --help` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${COURIER_DATABASE_URL:-}${DATABASE_URL:-}" ]; then
  scripts/ensure-postgres.sh
fi
exec cargo run --release --locked -p courier-server -- "$@"
