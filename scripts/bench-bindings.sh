#!/usr/bin/env bash
# Benchmarks the uniffi bindings against Rust (a benchmark, not a test: it asserts
# nothing). One server (scripts/with-test-server.sh), one prepared set of accounts
# (bindings/ffi/examples/bench.rs `prepare`), then the same measurements through Rust
# (courier_sdk::app directly), Kotlin on the JVM and Python:
#   send9   one group message to 9 devices over established sessions (ms per send;
#           50 sends, one at a time, after BENCH_WARMUP sends (default 200) that open
#           the sessions and let the JVM's JIT compile the call path)
#   cold    events/s to the listener: MESSAGES messages waiting at the server when the
#           loop starts (download, decrypt, store, deliver), until the last one arrived
#   queued  events/s to the listener: MESSAGES events already stored (delivery only)
# Prints a table. BENCH_MESSAGES (default 5000), BENCH_PROFILE (release or debug,
# default release: the library, the server and the Rust program in that profile).
set -euo pipefail
cd "$(dirname "$0")/.."

messages="${BENCH_MESSAGES:-5000}"
export BENCH_WARMUP="${BENCH_WARMUP:-200}"
profile="${BENCH_PROFILE:-release}"
flags=()
[ "$profile" = release ] && flags=(--release)

scripts/ensure-postgres.sh
kotlin_home=$(scripts/ensure-binding-tools.sh --print-kotlin-home)
cargo build --quiet --locked "${flags[@]}" -p courier-server
cargo build --quiet --locked "${flags[@]}" -p courier-ffi --example bench
out=$(scripts/build-bindings-uniffi.sh "${flags[@]}")
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export COURIER_SERVER_BIN="$target_dir/$profile/courier-server"

kotlin_lib="$kotlin_home/lib"
classpath="/usr/share/java/jna.jar:$kotlin_lib/kotlinx-coroutines-core-jvm.jar:$kotlin_lib/kotlin-stdlib.jar"
sources=("$out/kotlin/dev/courier/courier_ffi.kt" bindings/ffi/bench/Bench.kt)
digest=$(cat "${sources[@]}" | sha256sum | cut -c1-16)
jar="$out/kotlin-bench-$digest.jar"
if [ ! -f "$jar" ]; then
  rm -f "$out"/kotlin-bench-*.jar
  "$kotlin_home/bin/kotlinc" -nowarn -cp "$classpath" "${sources[@]}" -d "$out/partial-bench.jar"
  mv "$out/partial-bench.jar" "$jar"
fi

work=$(mktemp -d)
results="$work/results"
trap 'rm -rf "$work"' EXIT
export BENCH_DIR="$work/stores" BENCH_RESULTS="$results" BENCH_MESSAGES="$messages"
export BENCH_RUST="$target_dir/$profile/examples/bench" BENCH_JAR="$jar" BENCH_CLASSPATH="$classpath"
export BENCH_LIBDIR="$target_dir/$profile" BENCH_PYTHON="$out/python"
scripts/with-test-server.sh bash -c '
  set -euo pipefail
  "$BENCH_RUST" prepare "$BENCH_DIR" "$BENCH_MESSAGES"
  "$BENCH_RUST" run "$BENCH_DIR" | tee -a "$BENCH_RESULTS"
  java -Djna.library.path="$BENCH_LIBDIR" -cp "$BENCH_JAR:$BENCH_CLASSPATH" BenchKt "$BENCH_DIR" | tee -a "$BENCH_RESULTS"
  PYTHONPATH="$BENCH_PYTHON" python3 bindings/ffi/bench/bench.py "$BENCH_DIR" | tee -a "$BENCH_RESULTS"
'

value() { awk -v l="$1" -v m="$2" '$1 == "RESULT" && $2 == l && $3 == m { print $4 }' "$results"; }
echo
echo "uniffi bindings, $profile build, $messages messages per event run, $(nproc) cores"
printf '%-8s %16s %16s %18s %18s\n' language "send9 mean ms" "send9 p50 ms" "cold events/s" "queued events/s"
for language in rust kotlin python; do
  printf '%-8s %16s %16s %18s %18s\n' "$language" \
    "$(value "$language" send9_mean_ms)" "$(value "$language" send9_p50_ms)" \
    "$(value "$language" events_cold_per_s)" "$(value "$language" events_queued_per_s)"
done
