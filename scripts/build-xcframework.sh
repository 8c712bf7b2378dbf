#!/usr/bin/env bash
# Builds bindings/ffi/swift/Courier.xcframework for the Swift package
# (bindings/ffi/swift/Package.swift): courier-ffi as a static library for iOS devices
# (aarch64-apple-ios) and the simulator (aarch64-apple-ios-sim and x86_64-apple-ios,
# joined with lipo), with the generated C header and module map (module CourierFFI).
#
# macOS with Xcode only (xcodebuild, lipo, the iOS SDKs); on any other system it stops
# at once and says so. Release build; IPHONEOS_DEPLOYMENT_TARGET defaults to 15.0.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { printf 'build-xcframework: %s\n' "$*" >&2; exit 1; }

[ "$(uname -s)" = Darwin ] ||
  fail "needs macOS with Xcode (xcodebuild, lipo, the iOS SDKs); this is $(uname -s). The Swift sources are generated and checked on Linux (scripts/generate-swift.sh), the XCFramework is built on a Mac."
command -v xcodebuild >/dev/null || fail "xcodebuild not found: install Xcode and run xcode-select"
command -v lipo >/dev/null || fail "lipo not found: install the Xcode command line tools"

export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"
targets="aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios"
if command -v rustup >/dev/null; then
  # shellcheck disable=SC2086
  rustup target add $targets
fi

for target in $targets; do
  cargo build --locked --release -p courier-ffi --target "$target"
done
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

# The Swift sources and headers must match this library.
scripts/generate-swift.sh --check

work="$target_dir/xcframework"
rm -rf "$work"
mkdir -p "$work/headers" "$work/ios-simulator"
cp bindings/ffi/swift/Headers/CourierFFI.h bindings/ffi/swift/Headers/module.modulemap "$work/headers/"
lipo -create \
  "$target_dir/aarch64-apple-ios-sim/release/libcourier_ffi.a" \
  "$target_dir/x86_64-apple-ios/release/libcourier_ffi.a" \
  -output "$work/ios-simulator/libcourier_ffi.a"

output=bindings/ffi/swift/Courier.xcframework
rm -rf "$output"
xcodebuild -create-xcframework \
  -library "$target_dir/aarch64-apple-ios/release/libcourier_ffi.a" -headers "$work/headers" \
  -library "$work/ios-simulator/libcourier_ffi.a" -headers "$work/headers" \
  -output "$output"
echo "build-xcframework: wrote $output"
