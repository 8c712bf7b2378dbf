#!/usr/bin/env bash
# Prints the path of a PgBouncer binary that tracks prepared statements in transaction
# mode (`max_prepared_statements`, PgBouncer 1.21 and newer), building it once if needed.
#
# Fly.io's Managed Postgres hands out a pooled URL through PgBouncer in transaction mode;
# sqlx prepares every statement, so the tests put the same kind of PgBouncer in front of
# PostgreSQL. Debian 12 packages PgBouncer 1.18, which predates prepared-statement
# tracking, so the script builds 1.24.1 from Debian's own source tarball (Debian's
# registry, checksum pinned) against Debian's libevent and OpenSSL, into a cache outside
# the checkout. Idempotent: a second run prints the cached binary.
set -euo pipefail

VERSION=1.24.1
SHA256=da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0
SOURCE_URL="http://deb.debian.org/debian/pool/main/p/pgbouncer/pgbouncer_${VERSION}.orig.tar.gz"
CACHE="${COURIER_TOOLS_CACHE:-${HOME:-/tmp}/.cache/courier-tools}"
PREFIX="$CACHE/pgbouncer-$VERSION"
BINARY="$PREFIX/bin/pgbouncer"

log() { printf 'ensure-pgbouncer: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}

if [ -x "$BINARY" ] && "$BINARY" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$BINARY"
  exit 0
fi

missing=()
for package in libevent-dev libssl-dev pkg-config make gcc curl; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing build dependencies: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "building PgBouncer $VERSION from $SOURCE_URL"
curl -fsSL --retry 3 -o "$work/source.tar.gz" "$SOURCE_URL"
echo "$SHA256  $work/source.tar.gz" | sha256sum -c --quiet -
tar -xzf "$work/source.tar.gz" -C "$work"
cd "$work/pgbouncer-$VERSION"
./configure --prefix="$PREFIX" --without-cares --without-systemd --without-pam --without-ldap >"$work/configure.log" 2>&1 ||
  { tail -20 "$work/configure.log" >&2; exit 1; }
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -20 "$work/make.log" >&2; exit 1; }
mkdir -p "$PREFIX/bin"
install -m 0755 pgbouncer "$BINARY"
log "built $BINARY"
echo "$BINARY"
