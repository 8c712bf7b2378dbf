#!/usr/bin/env bash
# Benchmarks the uniffi bindings against Rust (a benchmark, not a test: it asserts
# nothing). One server (scripts/with-test-server.sh), one prepared set of accounts
# (bindings/ffi/examples/bench.rs `prepare`), then the same measurements through Rust
# (courier_sdk::app directly), Kotlin on the JVM and Python:
#   send9   one group message to 9 devices over established sessions (ms per send;
#           50 sends, one at a time, after BENCH_WARMUP sends (default 2000) that open
#           the sessions and let the JVM's JIT compile the call path), BENCH_ROUNDS
#           rounds (default 20) by bindings/ffi/bench/rounds.py: the three programs
#           stay open and take turns, a block of sends each, in a rotated order; the
#           table gives the median over the rounds, and each language's p50 against
#           Rust's in the same round (median over the rounds)
#   cold    events/s to the listener: MESSAGES messages waiting at the server when the
#           loop starts (download, decrypt, store, deliver), until the last one arrived
#   queued  events/s to the listener: MESSAGES events already stored (delivery only)
# Prints a table. BENCH_MESSAGES (default 5000), BENCH_PROFILE (release or debug,
# default release: the library, the server and the Rust program in that profile),
# BENCH_JAVA_OPTS (options for the JVM, default none).
set -euo pipefail
cd "$(dirname "$0")/.."

messages="${BENCH_MESSAGES:-5000}"
export BENCH_WARMUP="${BENCH_WARMUP:-2000}"
export BENCH_ROUNDS="${BENCH_ROUNDS:-20}" BENCH_JAVA_OPTS="${BENCH_JAVA_OPTS:-}"
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
  measure_command() { # LANGUAGE: the benchmark program of that language
    case "$1" in
      rust) "$BENCH_RUST" run "$BENCH_DIR" ;;
      kotlin) java $BENCH_JAVA_OPTS -Djna.library.path="$BENCH_LIBDIR" -cp "$BENCH_JAR:$BENCH_CLASSPATH" BenchKt "$BENCH_DIR" ;;
      python) PYTHONPATH="$BENCH_PYTHON" python3 bindings/ffi/bench/bench.py "$BENCH_DIR" ;;
    esac
  }
  measure() { # LANGUAGE ROUND: one run, its RESULT lines tagged with ROUND
    measure_command "$1" | sed "s/^RESULT /RESULT $2 /" | tee -a "$BENCH_RESULTS"
  }
  "$BENCH_RUST" prepare "$BENCH_DIR" "$BENCH_MESSAGES"
  languages=(rust kotlin python)
  commands=()
  for language in "${languages[@]}"; do commands+=("$language=BENCH_PART=send9 measure_command $language"); done
  export -f measure_command
  python3 bindings/ffi/bench/rounds.py "$BENCH_ROUNDS" "$BENCH_RESULTS" -- "${commands[@]}"
  for language in "${languages[@]}"; do BENCH_PART=events measure "$language" all; done
'

echo
echo "uniffi bindings, $profile build, $BENCH_ROUNDS rounds, $messages messages per event run, $(nproc) cores"
python3 - "$results" <<'PY'
import statistics, sys
from collections import defaultdict
values = defaultdict(dict)  # (language, metric) -> {round: value}
for line in open(sys.argv[1]):
    fields = line.split()
    if len(fields) == 5 and fields[0] == "RESULT":
        _, round_, language, metric, value = fields
        values[(language, metric)][round_] = float(value)
def median(language, metric):
    found = values[(language, metric)]
    return statistics.median(found.values()) if found else float("nan")
print(f"{'language':<8} {'send9 mean ms':>14} {'send9 p50 ms':>13} {'p50 vs rust':>12} {'cold events/s':>14} {'queued events/s':>16}")
for language in ("rust", "kotlin", "python"):
    own, rust = values[(language, "send9_p50_ms")], values[("rust", "send9_p50_ms")]
    ratios = [own[r] / rust[r] - 1 for r in own if r in rust]
    ratio = f"{statistics.median(ratios) * 100:+.0f}%" if ratios else "n/a"
    print(f"{language:<8} {median(language, 'send9_mean_ms'):>14.2f} {median(language, 'send9_p50_ms'):>13.2f} {ratio:>12}"
          f" {median(language, 'events_cold_per_s'):>14.0f} {median(language, 'events_queued_per_s'):>16.0f}")
PY
