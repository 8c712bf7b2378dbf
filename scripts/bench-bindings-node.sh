#!/usr/bin/env bash
# Benchmark (not a test) of the Node-API binding against a real server of its own (release
# builds of the server, the addon and the Rust baseline), in one run:
#   (a) one message to 9 devices over established sessions (a direct send to a user with
#       7 devices plus the sender's 2 others; a group send to a channel of the same 9
#       devices), per call, through JavaScript and through Rust;
#   (b) events per second into the JavaScript callback (and a Rust listener): messages
#       queued while nothing receives, then the loop started and timed until all
#       arrived, `cold` (download, decrypt, store, deliver) and `queued` (already stored:
#       delivery only).
#
#   scripts/bench-bindings-node.sh [MESSAGES] [SENDS]     # defaults 5000 and 100
#
# Needs what scripts/test-bindings-node.sh needs. Prints a table; the numbers go to
# docs by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
package="$root/bindings/node"
messages="${1:-5000}"
sends="${2:-100}"

lock_hash=$(sha256sum "$package/package-lock.json" | cut -d' ' -f1)
stamp="$package/node_modules/.courier-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  (cd "$package" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$stamp"
fi

cargo build --quiet --locked --release -p courier-server
cargo build --quiet --locked --release -p courier-node --example bench_rust
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$package" && npx --no-install napi build --platform --release --no-js --no-const-enum --output-dir "$out" --dts index.d.ts)
cp "$out"/courier.*.node "$package/"

target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export COURIER_SERVER_BIN="$target_dir/release/courier-server"
export COURIER_BENCH_RUST="$target_dir/release/examples/bench_rust"
# Ten devices per user: the fan-out's recipient has 7, the event sink 4.
COURIER_DEVICE_LIMIT=10 NO_COLOR=1 RUST_LOG=warn \
  scripts/with-test-server.sh node "$package/bench/run.js" "$messages" "$sends"
