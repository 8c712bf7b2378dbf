#!/usr/bin/env bash
# Builds courier-ffi for Android into the library module bindings/ffi/android/ (an
# Android developer includes that directory as a Gradle module):
#   src/main/jniLibs/{arm64-v8a,armeabi-v7a,x86_64}/libcourier_ffi.so   (cargo-ndk, release)
#   src/main/kotlin/dev/courier/courier_ffi.kt                           (uniffi, Android flavour)
# The 16 KiB page-size link flag for Android targets is in .cargo/config.toml.
#
# Needs the Android NDK (ANDROID_NDK_HOME) and cargo-ndk (`cargo install cargo-ndk`);
# without them it stops at once and says so. ANDROID_API_LEVEL defaults to 24.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { printf 'build-android: %s\n' "$*" >&2; exit 1; }

[ -n "${ANDROID_NDK_HOME:-}" ] ||
  fail "ANDROID_NDK_HOME is not set: install the Android NDK (r26 or later) and point ANDROID_NDK_HOME at it"
[ -d "$ANDROID_NDK_HOME" ] || fail "ANDROID_NDK_HOME=$ANDROID_NDK_HOME is not a directory"
cargo ndk --version >/dev/null 2>&1 || fail "cargo-ndk is missing: cargo install cargo-ndk"

api="${ANDROID_API_LEVEL:-24}"
if command -v rustup >/dev/null; then
  rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
fi

module=bindings/ffi/android
rm -rf "$module/src/main/jniLibs" "$module/src/main/kotlin"
cargo ndk --platform "$api" -t arm64-v8a -t armeabi-v7a -t x86_64 \
  -o "$module/src/main/jniLibs" build --locked --release -p courier-ffi

# The Kotlin sources come from the host build's metadata (the same crate, the same
# uniffi): the Android flavour uses Android's cleaner and skips the start-up checksums.
# Two builds, as scripts/build-bindings-uniffi.sh does them: one `cargo build` of both
# would unify uniffi's features and rebuild each.
cargo build --quiet --locked -p courier-ffi
cargo build --quiet --locked -p uniffi-bindgen
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$(uname -s)" in
  Darwin) library="$target_dir/debug/libcourier_ffi.dylib" ;;
  *) library="$target_dir/debug/libcourier_ffi.so" ;;
esac
"$target_dir/debug/uniffi-bindgen" generate --no-format --library "$library" --language kotlin \
  --config bindings/ffi/uniffi-android.toml --out-dir "$module/src/main/kotlin"
echo "build-android: wrote $module/src/main/jniLibs and $module/src/main/kotlin"
