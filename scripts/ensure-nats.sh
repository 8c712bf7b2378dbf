#!/usr/bin/env bash
# Makes sure a NATS server answers on 127.0.0.1:4222 (the local default of
# COURIER_NATS_URL, used by the NATS fabric and its tests). On a machine where it is
# installed but stopped, it starts it; where it is absent (Debian or Ubuntu), it installs
# it with apt-get first. Idempotent: on a machine where it already runs, it does nothing.
set -euo pipefail

HOST=127.0.0.1
PORT=4222

log() { printf 'ensure-nats: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}

# A NATS server greets every client with an `INFO {…}` line: a port that is open but
# held by something else does not count.
answers() {
  (
    exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
    read -r -t 2 greeting <&3 || exit 1
    [[ $greeting == INFO* ]]
  ) 2>/dev/null
}

nats_binary() { command -v nats-server || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }; }

if answers; then
  exit 0
fi

if [ -z "$(nats_binary)" ]; then
  log "nats-server is not installed; installing it with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
binary=$(nats_binary)
if [ -z "$binary" ]; then
  log "nats-server is still not on the PATH after installing it"
  exit 1
fi

# The package may have started it (on a machine with systemd) while installing.
if ! answers; then
  if [ -d /run/systemd/system ] && [ -f /lib/systemd/system/nats-server.service ]; then
    log "starting nats-server with systemd"
    as_root systemctl start nats-server || true
  fi
fi
if ! answers; then
  # No systemd (a container): run it in the background, detached from this shell.
  # Courier uses core publish/subscribe only, so JetStream is not enabled.
  logfile="${TMPDIR:-/tmp}/nats-server.log"
  [ "$(id -u)" -eq 0 ] && logfile=/var/log/nats-server.log
  log "starting $binary on $HOST:$PORT (log: $logfile)"
  setsid "$binary" -a "$HOST" -p "$PORT" -l "$logfile" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 60); do
    answers && break
    sleep 0.5
  done
fi
if ! answers; then
  log "NATS did not start on $HOST:$PORT; see ${logfile:-journalctl -u nats-server}"
  exit 1
fi
log "NATS is ready on $HOST:$PORT"
