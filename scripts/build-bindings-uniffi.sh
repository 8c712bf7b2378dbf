#!/usr/bin/env bash
# Builds libcourier_ffi.so and uniffi-bindgen for this host and generates the Kotlin and
# Python sources from the library into TARGET/bindings-uniffi[-release]/{kotlin,python}
# (the Python directory also holds the library). Prints that directory. Used by
# scripts/test-bindings-uniffi.sh and scripts/bench-bindings.sh.
#
#   scripts/build-bindings-uniffi.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=()
if [ "${1:-}" = "--release" ]; then
  profile=release
  cargo_profile=(--release)
fi

cargo build --quiet --locked "${cargo_profile[@]}" -p courier-ffi
# The generator itself is a host tool: always the debug build.
cargo build --quiet --locked -p uniffi-bindgen
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
library="$target_dir/$profile/libcourier_ffi.so"
bindgen="$target_dir/debug/uniffi-bindgen"
out="$target_dir/bindings-uniffi"
[ "$profile" = release ] && out="$out-release"
rm -rf "$out/kotlin" "$out/python"
mkdir -p "$out"
"$bindgen" generate --no-format --library "$library" --language kotlin --out-dir "$out/kotlin" >/dev/null
"$bindgen" generate --no-format --library "$library" --language python --out-dir "$out/python" >/dev/null
cp "$library" "$out/python/"
echo "$out"
