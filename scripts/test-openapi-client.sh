#!/usr/bin/env bash
# A client generated from docs/openapi.json by maintained generators (openapi-typescript
# for the types, openapi-fetch for the runtime; versions pinned in
# clients/typescript/package-lock.json), type-checked with `tsc --strict`, and run
# against a real server of its own (scripts/with-test-server.sh): register, log in,
# publish keys, claim, send, read the inbox, acknowledge, and typed refusals.
#
#   scripts/test-openapi-client.sh
#
# Installs its npm packages into clients/typescript/node_modules when missing (npm ci
# from the lock file); generates clients/typescript/src/generated/openapi.ts afresh on
# every run (never committed: it is a function of the document and the pinned
# generator). Needs Node.js 20 or later with npm; PostgreSQL as with-test-server.sh
# needs it. Ends with one line: "openapi-client: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
package="$root/clients/typescript"

finish() {
  echo "openapi-client: $1 passed, $2 failed"
  exit "$3"
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test-openapi-client: node and npm are needed (Node.js 20 or later)" >&2
  finish 0 1 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "test-openapi-client: Node.js $(node --version) is too old; 20 or later is needed" >&2
  finish 0 1 1
fi

# npm packages: installed again only when package-lock.json changed.
lock_hash=$(sha256sum "$package/package-lock.json" | cut -d' ' -f1)
stamp="$package/node_modules/.courier-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  echo "test-openapi-client: npm ci" >&2
  (cd "$package" && npm ci --no-audit --no-fund --loglevel=error) || finish 0 1 1
  echo "$lock_hash" >"$stamp"
fi

# Generate from the committed document (the one a test keeps identical to what the
# server serves), then type-check the client and the tests against it, then build.
rm -rf "$package/src/generated" "$package/build"
(cd "$package" && npx --no-install openapi-typescript "$root/docs/openapi.json" \
  --output src/generated/openapi.ts) || finish 0 1 1
echo "test-openapi-client: tsc --strict --noEmit" >&2
(cd "$package" && npx --no-install tsc --noEmit -p tsconfig.json) || finish 0 1 1
(cd "$package" && npx --no-install tsc -p tsconfig.json) || finish 0 1 1

# The TAP reporter whatever the terminal, so the counts below are always printed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
NO_COLOR=1 scripts/with-test-server.sh node --test --test-reporter=tap --test-concurrency=1 \
  "$package"/build/test/*.test.js 2>&1 | tee "$log" || status=$?
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -n1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -n1)
passed=${passed:-0}
failed=${failed:-0}
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then failed=1 status=1; fi
finish "$passed" "$failed" "$status"
