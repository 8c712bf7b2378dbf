#!/usr/bin/env bash
# Runs every test: unit, integration (real server, real HTTP, real PostgreSQL with one
# database per test) and doc tests. Starts PostgreSQL if it is stopped, installs it if
# it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
# `#[sqlx::test]` creates and drops a database per test through this server.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo test --workspace --locked "$@"
