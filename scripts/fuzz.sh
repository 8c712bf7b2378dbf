#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60) with
# cargo-fuzz (libFuzzer). Installs cargo-fuzz if missing. Works on a stable toolchain:
# RUSTC_BOOTSTRAP lets it use the sanitizer flags cargo-fuzz needs.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in $(cargo fuzz list); do
  echo "== $target (${seconds}s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds"
done
