#!/usr/bin/env bash
# Installs what the uniffi binding tests need, once per machine (idempotent; Debian or
# Ubuntu, as root or with sudo):
#   - JNA (Debian `libjna-java`, /usr/share/java/jna.jar), for Kotlin on the JVM;
#   - the Kotlin compiler from the npm package `kotlin-compiler` (its lib/ also holds
#     kotlin-stdlib and kotlinx-coroutines), cached under the cargo target directory;
#   - pytest for Python (pip).
# Prints nothing when everything is there. Prints `KOTLIN_HOME=...` on stdout when asked
# with --print-kotlin-home, so callers find the compiler without repeating the path rule.
set -euo pipefail
cd "$(dirname "$0")/.."

KOTLIN_VERSION="${KOTLIN_VERSION:-2.4.20}"
log() { printf 'ensure-binding-tools: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

# The cargo target directory (CARGO_TARGET_DIR, or the workspace's), without building.
target_dir="${CARGO_TARGET_DIR:-}"
if [ -z "$target_dir" ]; then
  target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
fi
tools="$target_dir/binding-tools"
kotlin_home="$tools/kotlin-compiler-$KOTLIN_VERSION"

if ! command -v java >/dev/null; then
  log "installing a Java runtime"
  apt_install default-jdk-headless
fi
if [ ! -f /usr/share/java/jna.jar ]; then
  log "installing JNA (libjna-java)"
  apt_install libjna-java
fi
if ! command -v npm >/dev/null; then
  log "installing npm"
  apt_install npm
fi
if [ ! -x "$kotlin_home/bin/kotlinc" ]; then
  log "fetching the Kotlin compiler $KOTLIN_VERSION (npm package kotlin-compiler)"
  mkdir -p "$tools"
  scratch=$(mktemp -d "$tools/kotlin.XXXXXX")
  (cd "$scratch" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null)
  tar -xzf "$scratch"/kotlin-compiler-*.tgz -C "$scratch"
  chmod +x "$scratch"/package/bin/*
  rm -rf "$kotlin_home"
  mv "$scratch/package" "$kotlin_home"
  rm -rf "$scratch"
fi
for jar in kotlin-stdlib.jar kotlinx-coroutines-core-jvm.jar; do
  if [ ! -f "$kotlin_home/lib/$jar" ]; then
    log "the Kotlin compiler at $kotlin_home has no lib/$jar"
    exit 1
  fi
done
if ! python3 -c 'import pytest' 2>/dev/null; then
  log "installing pytest"
  python3 -m pip install --quiet --root-user-action=ignore pytest >&2 || {
    # Debian's own Python refuses pip outside a virtualenv (PEP 668): use its package.
    apt_install python3-pytest
  }
fi

if [ "${1:-}" = "--print-kotlin-home" ]; then
  echo "$kotlin_home"
fi
