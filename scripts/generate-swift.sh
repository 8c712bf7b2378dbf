#!/usr/bin/env bash
# Regenerates the committed Swift bindings of courier-ffi from the library's uniffi
# metadata:
#   bindings/ffi/swift/Sources/Courier/Courier.swift   the Swift API (module Courier)
#   bindings/ffi/swift/Headers/CourierFFI.h            the C declarations it calls
#   bindings/ffi/swift/Headers/module.modulemap        module CourierFFI over that header
# The XCFramework (scripts/build-xcframework.sh, macOS) ships the headers with the static
# libraries; the Swift package compiles Courier.swift against them.
#
#   scripts/generate-swift.sh           regenerate in place
#   scripts/generate-swift.sh --check   regenerate into a scratch directory and fail if the
#                                       committed files differ (run by test-bindings-uniffi.sh)
# Works on Linux: generating needs no Swift toolchain (compiling does).
set -euo pipefail
cd "$(dirname "$0")/.."

check=""
[ "${1:-}" = "--check" ] && check=1

# Two builds, as scripts/build-bindings-uniffi.sh does them: one `cargo build` of both
# would unify uniffi's features and rebuild each.
cargo build --quiet --locked -p courier-ffi
cargo build --quiet --locked -p uniffi-bindgen
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$(uname -s)" in
  Darwin) library="$target_dir/debug/libcourier_ffi.dylib" ;;
  *) library="$target_dir/debug/libcourier_ffi.so" ;;
esac

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$target_dir/debug/uniffi-bindgen" generate --no-format --library "$library" \
  --language swift --out-dir "$scratch/raw" >/dev/null

mkdir -p "$scratch/swift/Sources/Courier" "$scratch/swift/Headers"
mv "$scratch/raw/Courier.swift" "$scratch/swift/Sources/Courier/Courier.swift"
mv "$scratch/raw/CourierFFI.h" "$scratch/swift/Headers/CourierFFI.h"
# An XCFramework's Headers/ carries its module map under this name.
mv "$scratch/raw/CourierFFI.modulemap" "$scratch/swift/Headers/module.modulemap"
leftover=$(ls -A "$scratch/raw")
if [ -n "$leftover" ]; then
  echo "generate-swift: unexpected generated files: $leftover" >&2
  exit 1
fi

committed=bindings/ffi/swift
files="Sources/Courier/Courier.swift Headers/CourierFFI.h Headers/module.modulemap"
if [ -n "$check" ]; then
  stale=""
  for file in $files; do
    if ! cmp -s "$scratch/swift/$file" "$committed/$file"; then
      stale="$stale $committed/$file"
    fi
  done
  if [ -n "$stale" ]; then
    echo "generate-swift: the committed Swift bindings are out of date:$stale" >&2
    echo "generate-swift: run scripts/generate-swift.sh and commit the result" >&2
    for file in $files; do
      diff -u "$committed/$file" "$scratch/swift/$file" 2>&1 | head -n 20 >&2 || true
    done
    exit 1
  fi
  echo "generate-swift: the committed Swift bindings are current (3 files)"
  exit 0
fi

for file in $files; do
  mkdir -p "$(dirname "$committed/$file")"
  cp "$scratch/swift/$file" "$committed/$file"
done
echo "generate-swift: wrote $committed/{$(echo "$files" | tr ' ' ',')}"
