#!/usr/bin/env bash
# Interoperability: an independent client on libolm (interop/python, python-olm) against
# the real server and the real SDK (its uniffi Python binding), under
# scripts/with-test-server.sh:
#   1. installs python-olm and pytest into a virtualenv outside the checkout
#      (COURIER_INTEROP_VENV, default ~/.cache/courier-interop-venv);
#   2. builds the server, libcourier_ffi.so and uniffi-bindgen, generates the Python
#      binding into TARGET/interop-ffi/python;
#   3. runs pytest on interop/python/tests.
# Installs what is missing first (PostgreSQL, python3-venv; idempotent, Debian as root).
# Ends with one line: "interop: N passed, M failed".
#
#   COURIER_TEST_FILTER=fallback scripts/test-interop.sh   # only matching tests
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test-interop: %s\n' "$*" >&2; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}
apt_install() {
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

scripts/ensure-postgres.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

# --- Python: a virtualenv with the pinned requirements --------------------------------
venv="${COURIER_INTEROP_VENV:-$HOME/.cache/courier-interop-venv}"
requirements=interop/python/requirements.txt
stamp="$venv/.requirements-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    log "creating the virtualenv $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" 2>/dev/null || {
      # Debian's Python has venv (ensurepip) in a package of its own.
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv"
    }
  fi
  log "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')"
  # python-olm has wheels (libolm inside) for CPython 3.11 and 3.12 on x86_64 Linux;
  # elsewhere pip builds libolm from the source distribution, which takes cmake and a C++
  # compiler.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    -r "$requirements" >&2 || {
    log "no wheel for this Python: building python-olm from source"
    command -v cmake >/dev/null && command -v c++ >/dev/null || apt_install cmake g++ python3-dev
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  }
  touch "$stamp"
fi

# --- Rust: the server and the SDK's Python binding -----------------------------------
# One package per build, as scripts/test-bindings-uniffi.sh builds them: the features
# cargo unifies then match, and the artifacts are shared.
cargo build --quiet --locked -p courier-server
cargo build --quiet --locked -p courier-ffi
cargo build --quiet --locked -p uniffi-bindgen
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export COURIER_SERVER_BIN="$target_dir/debug/courier-server"
# A directory of its own (not bindings-uniffi/), so a binding test run beside this one
# does not regenerate it underneath.
ffi="$target_dir/interop-ffi/python"
rm -rf "$ffi"
mkdir -p "$ffi"
cp "$target_dir/debug/libcourier_ffi.so" "$ffi/"
"$target_dir/debug/uniffi-bindgen" generate --no-format --library "$ffi/libcourier_ffi.so" \
  --language python --out-dir "$ffi" >/dev/null

# --- pytest ----------------------------------------------------------------------------
output=$(mktemp)
trap 'rm -f "$output"' EXIT
pytest_args=(-q -p no:cacheprovider interop/python/tests)
[ -n "${COURIER_TEST_FILTER:-}" ] && pytest_args+=(-k "$COURIER_TEST_FILTER")
status=0
COURIER_FFI_PYTHON="$ffi" scripts/with-test-server.sh "$venv/bin/python" -m pytest "${pytest_args[@]}" 2>&1 |
  tee "$output" || status=$?

# pytest's last line: "N passed, M failed, K errors in T s" (any part may be missing).
summary=$(grep -E '(passed|failed|errors?|no tests ran).* in [0-9.]+s' "$output" | tail -n1 || true)
count() { printf '%s\n' "$summary" | grep -Eo "[0-9]+ $1" | grep -Eo '[0-9]+' || echo 0; }
passed=$(count passed)
failed=$(( $(count failed) + $(count 'errors?') ))
passed=${passed:-0}
# A run that failed without counting a failure (a crash, a build or collection error) fails.
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "interop: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
