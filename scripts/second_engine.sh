#!/usr/bin/env bash
# A second Docker engine on this machine, for multi-node tests: its own data root, exec root, pidfile
# and socket, so it shares nothing with the default engine but the kernel.
#   scripts/second_engine.sh start   # starts it (no-op if it already answers), waits until it answers
#   scripts/second_engine.sh stop    # stops it (SIGTERM, then SIGKILL after STOP_TIMEOUT_S)
#   scripts/second_engine.sh status  # exit 0 when it answers
# It also listens on tcp://127.0.0.1:$TLS_PORT with mutual TLS (certificates made here with openssl,
# in $TLS_DIR), so that `deepdock node add --engine tcp://... --tls-ca --tls-cert --tls-key` is tested
# against a real TLS engine.
# Needs root, dockerd and openssl. Overridable: DEEPDOCK_ENGINE2_ROOT, DEEPDOCK_ENGINE2_SOCK,
# DEEPDOCK_ENGINE2_TLS_PORT.
set -euo pipefail

DATA_ROOT="${DEEPDOCK_ENGINE2_ROOT:-/var/lib/deepdock-engine2}"
EXEC_ROOT="/run/deepdock-engine2"
PIDFILE="/run/deepdock-engine2.pid"
SOCK="${DEEPDOCK_ENGINE2_SOCK:-/run/deepdock-engine2.sock}"
LOG="/var/log/deepdock-engine2.log"
TLS_DIR="/etc/deepdock-engine2/tls"
TLS_PORT="${DEEPDOCK_ENGINE2_TLS_PORT:-23761}"
FAKE_NVIDIA_DIR="$(cd "$(dirname "$0")/../tests/integration/fake_nvidia" && pwd)"
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30

answers() {
  docker -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

tls_certs() {
  # A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, valid for ten years.
  [[ -f "$TLS_DIR/client-key.pem" ]] && return 0
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=deepdock-engine2-ca" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile server.ext -out server-cert.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=deepdock-client" -keyout client-key.pem -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile client.ext -out client-cert.pem 2>/dev/null
    chmod 0600 ./*-key.pem
  )
}

start() {
  if answers; then
    echo "second engine already answers at unix://$SOCK"
    return 0
  fi
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  tls_certs
  # Same flags as the main engine here: no iptables, no default bridge (containers use network none).
  # "nvidia" is registered as an alias of runc, and the fake NVIDIA hook of the tests is on dockerd's
  # PATH (tests/integration/fake_nvidia: it makes Docker register its nvidia device driver), so GPU
  # discovery and telemetry run their real path here: with no /run/deepdock-fake-nvidia/gpus.csv the
  # hook fails like a host without a driver (0 GPUs); with one, the node has those GPUs.
  # --containerd is left out so that this dockerd runs its own containerd under its exec root.
  PATH="$FAKE_NVIDIA_DIR:$PATH" nohup dockerd \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --pidfile "$PIDFILE" \
    -H "unix://$SOCK" \
    -H "tcp://127.0.0.1:$TLS_PORT" \
    --tlsverify \
    --tlscacert "$TLS_DIR/ca.pem" \
    --tlscert "$TLS_DIR/server-cert.pem" \
    --tlskey "$TLS_DIR/server-key.pem" \
    --iptables=false \
    --ip-masq=false \
    --bridge=none \
    --add-runtime "nvidia=runc" \
    >"$LOG" 2>&1 &
  for _ in $(seq 1 $((START_TIMEOUT_S * 5))); do
    if answers; then
      echo "second engine up at unix://$SOCK (log: $LOG)"
      return 0
    fi
    sleep 0.2
  done
  echo "second engine did not answer within ${START_TIMEOUT_S}s; log tail:" >&2
  tail -n 30 "$LOG" >&2 || true
  return 1
}

stop() {
  if [[ ! -f "$PIDFILE" ]]; then
    echo "second engine not running (no $PIDFILE)"
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((STOP_TIMEOUT_S * 5))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      echo "second engine stopped"
      return 0
    fi
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "second engine killed after ${STOP_TIMEOUT_S}s"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
