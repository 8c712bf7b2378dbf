#!/usr/bin/env bash
# The Node-API binding (bindings/node): installs its npm packages when missing (npm ci from
# the committed package-lock.json), builds the addon, checks that the committed
# index.d.ts is what the build generates, and runs `node --test` against a real server
# of its own (scripts/with-test-server.sh).
#
#   scripts/test-bindings-node.sh               # build, check, test
#   scripts/test-bindings-node.sh --update-dts  # build and rewrite index.d.ts, no tests
#
# Needs Node.js 20.17 or later with npm (for @napi-rs/cli 3.10) and cargo; PostgreSQL
# as with-test-server.sh needs it. Idempotent: a second run reinstalls nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
package="$root/bindings/node"

update_dts=false
[ "${1:-}" = "--update-dts" ] && update_dts=true

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test-bindings-node: node and npm are needed (Node.js 20.17 or later)" >&2
  exit 1
fi
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 17) ? 0 : 1)'; then
  echo "test-bindings-node: Node.js $(node --version) is too old; @napi-rs/cli needs 20.17 or later" >&2
  exit 1
fi

# npm packages (the napi CLI): installed again only when package-lock.json changed.
lock_hash=$(sha256sum "$package/package-lock.json" | cut -d' ' -f1)
stamp="$package/node_modules/.courier-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  echo "test-bindings-node: npm ci" >&2
  (cd "$package" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$stamp"
fi

# Build into a scratch directory, so the committed index.d.ts is compared, not replaced.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
started=$(date +%s)
(cd "$package" && npx --no-install napi build --platform --no-js --no-const-enum --output-dir "$out" --dts index.d.ts)
echo "test-bindings-node: addon built in $(( $(date +%s) - started )) s" >&2

if $update_dts; then
  cp "$out/index.d.ts" "$package/index.d.ts"
  cp "$out"/courier.*.node "$package/"
  echo "test-bindings-node: index.d.ts updated" >&2
  exit 0
fi
if ! diff -u "$package/index.d.ts" "$out/index.d.ts"; then
  echo "test-bindings-node: bindings/node/index.d.ts is not what the build generates;" \
    "run scripts/test-bindings-node.sh --update-dts and commit it" >&2
  exit 1
fi
cp "$out"/courier.*.node "$package/"

# NO_COLOR: with-test-server.sh reads the server's address from its text log, which
# carries ANSI colour codes unless told not to.
NO_COLOR=1 scripts/with-test-server.sh node --test --test-concurrency=1 "$package"/test/*.test.js
