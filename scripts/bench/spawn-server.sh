# Sourced by the measurement scripts here: starts the server binary `$bin` on a fresh
# database named `$db` on a free port, waits until it is ready, and on exit stops it,
# drops the database and removes `$work`. Sets `port`, `metrics_port` (the private
# listener: /metrics), `server` and `work`.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
metrics_port=$(free_port)
work=$(mktemp -d)
COURIER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" COURIER_LISTEN="127.0.0.1:$port" COURIER_ADMIN_LISTEN="127.0.0.1:$metrics_port" COURIER_LOG=warn \
  "$bin" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$work"' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
