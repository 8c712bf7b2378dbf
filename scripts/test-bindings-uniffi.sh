#!/usr/bin/env bash
# Tests the uniffi bindings (bindings/ffi) against a real Courier server:
#   1. builds libcourier_ffi.so and uniffi-bindgen, generates the Kotlin and Python sources;
#   2. Kotlin on the JVM (kotlinc + JNA + kotlinx-coroutines) under with-test-server.sh;
#   3. Python (pytest) under with-test-server.sh;
#   4. Swift: the committed sources, header and module map equal a fresh generation, and
#      the C header compiles (gcc; no Swift toolchain here: Swift compiles on macOS).
# Installs what is missing first (PostgreSQL, Java, JNA, the Kotlin compiler, pytest;
# idempotent, Debian as root). Ends with one line: "bindings-uniffi: N passed, M failed".
#
#   COURIER_TEST_FILTER=listener scripts/test-bindings-uniffi.sh   # only matching tests
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test-bindings-uniffi: %s\n' "$*" >&2; }
started=$(date +%s)

scripts/ensure-postgres.sh
kotlin_home=$(scripts/ensure-binding-tools.sh --print-kotlin-home)
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

cargo build --quiet --locked -p courier-server
out=$(scripts/build-bindings-uniffi.sh)
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export COURIER_SERVER_BIN="$target_dir/debug/courier-server"

passed=0
failed=0
results=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# record NAME STATUS [LOG]: counts a runner's own "N passed, M failed" when its log has
# one (each Kotlin test, each pytest test), else the step as one check.
record() {
  local name=$1 status=$2 log=${3:-} p="" f=""
  if [ -n "$log" ]; then
    p=$(grep -Eo '[0-9]+ passed' "$log" | tail -n1 | grep -Eo '[0-9]+' || true)
    f=$(grep -Eo '[0-9]+ failed' "$log" | tail -n1 | grep -Eo '[0-9]+' || true)
  fi
  if [ -n "$p" ] || [ -n "$f" ]; then
    p=${p:-0}
    f=${f:-0}
    # A runner that failed without counting a failure (a crash) still fails.
    [ "$status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  elif [ "$status" -eq 0 ]; then
    p=1 f=0
  else
    p=0 f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$status" -eq 0 ] && [ "$f" -eq 0 ]; then results+=("PASS $name ($p)"); else results+=("FAIL $name ($p passed, $f failed)"); fi
}

# --- Kotlin on the JVM -------------------------------------------------------------
jna=/usr/share/java/jna.jar
kotlin_lib="$kotlin_home/lib"
classpath="$jna:$kotlin_lib/kotlinx-coroutines-core-jvm.jar:$kotlin_lib/kotlin-stdlib.jar:$kotlin_lib/kotlin-test.jar"
sources=("$out/kotlin/dev/courier/courier_ffi.kt" bindings/ffi/tests/kotlin/*.kt)
# kotlinc takes ~30 s: reuse the jar while the generated and test sources are unchanged.
digest=$(cat "${sources[@]}" | sha256sum | cut -c1-16)
jar="$out/kotlin-tests-$digest.jar"
status=0
if [ ! -f "$jar" ]; then
  log "compiling the Kotlin tests"
  rm -f "$out"/kotlin-tests-*.jar
  partial="$out/partial-$digest.jar"
  rm -f "$partial"
  "$kotlin_home/bin/kotlinc" -nowarn -cp "$classpath" "${sources[@]}" -d "$partial" || status=$?
  if [ "$status" -eq 0 ] && [ -f "$partial" ]; then mv "$partial" "$jar"; else log "kotlinc failed"; status=1; fi
fi
if [ "$status" -eq 0 ]; then
  log "running the Kotlin tests"
  scripts/with-test-server.sh java -Djna.library.path="$target_dir/debug" \
    -cp "$jar:$classpath" CourierTestKt 2>&1 | tee "$logs/kotlin" || status=$?
fi
record "kotlin (bindings/ffi/tests/kotlin)" "$status" "$logs/kotlin"

# --- Python --------------------------------------------------------------------------
status=0
log "running the Python tests"
pytest_args=(-q -p no:cacheprovider bindings/ffi/tests/python)
[ -n "${COURIER_TEST_FILTER:-}" ] && pytest_args+=(-k "$COURIER_TEST_FILTER")
COURIER_FFI_PYTHON="$out/python" scripts/with-test-server.sh python3 -m pytest "${pytest_args[@]}" 2>&1 |
  tee "$logs/python" || status=$?
record "python (bindings/ffi/tests/python)" "$status" "$logs/python"

# --- Swift: current sources, and a header that compiles ---------------------------------
status=0
scripts/generate-swift.sh --check || status=$?
record "swift sources current (scripts/generate-swift.sh --check)" "$status"

status=0
probe="$out/swift-header-probe.c"
printf '#include "CourierFFI.h"\nint main(void) { return 0; }\n' >"$probe"
# The header uses clang's nullability markers; gcc compiles it once they are defined away.
cc -std=c11 -Wall -Werror -D_Nonnull= -D_Nullable= -D_Null_unspecified= \
  -I bindings/ffi/swift/Headers -c "$probe" -o "$out/swift-header-probe.o" || status=$?
record "swift C header compiles (cc)" "$status"

printf '%s\n' "${results[@]}"
log "took $(( $(date +%s) - started )) s"
echo "bindings-uniffi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
