#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for the `postgres` user without a
# password (the local default Courier and its tests use). On a machine where it is
# installed but stopped, it starts it; where it is absent (Debian or Ubuntu), it installs
# it with apt-get first. Idempotent: on a machine where it already runs, it does nothing.
set -euo pipefail

HOST=127.0.0.1
PORT=5432

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sudo -u postgres sh -c "$*"; fi
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

can_connect() {
  command -v psql >/dev/null && psql -h "$HOST" -p "$PORT" -U postgres -d postgres -w -Atqc 'SELECT 1' >/dev/null 2>&1
}

if port_open && can_connect; then
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  log "PostgreSQL is not installed; installing it with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
if ! port_open; then
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    port_open && break
    sleep 0.5
  done
fi
if ! port_open; then
  log "PostgreSQL did not start on $HOST:$PORT; see /var/log/postgresql/"
  exit 1
fi

if ! can_connect; then
  # A fresh Debian install asks for a password over TCP. Courier's local default (and its
  # tests) use trust auth for loopback connections: fine for a development machine, never
  # for production, where COURIER_DATABASE_URL carries real credentials.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  log "allowing passwordless loopback connections in $hba (development machine)"
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 20); do
    can_connect && break
    sleep 0.5
  done
fi
if ! can_connect; then
  log "PostgreSQL runs but the postgres user cannot connect over $HOST:$PORT"
  exit 1
fi
log "PostgreSQL $version is ready on $HOST:$PORT"
