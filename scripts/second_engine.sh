#!/usr/bin/env bash
# A second Docker engine on this machine, for multi-node tests: its own data root, exec root, pidfile
# and socket, so it shares nothing with the default engine but the kernel.
#   scripts/second_engine.sh start   # starts it (no-op if it already answers), waits until it answers
#   scripts/second_engine.sh stop    # stops it (SIGTERM, then SIGKILL after STOP_TIMEOUT_S)
#   scripts/second_engine.sh status  # exit 0 when it answers
# Needs root and dockerd. Overridable: DEEPDOCK_ENGINE2_ROOT, DEEPDOCK_ENGINE2_SOCK.
set -euo pipefail

DATA_ROOT="${DEEPDOCK_ENGINE2_ROOT:-/var/lib/deepdock-engine2}"
EXEC_ROOT="/run/deepdock-engine2"
PIDFILE="/run/deepdock-engine2.pid"
SOCK="${DEEPDOCK_ENGINE2_SOCK:-/run/deepdock-engine2.sock}"
LOG="/var/log/deepdock-engine2.log"
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30

answers() {
  docker -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start() {
  if answers; then
    echo "second engine already answers at unix://$SOCK"
    return 0
  fi
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  # Same flags as the main engine here: no iptables, no default bridge (containers use network none).
  # "nvidia" is registered as an alias of runc so that GPU discovery's probe path runs here too
  # (it finds no NVIDIA device driver and must report 0 GPUs); on GPU hosts the real runtime is used.
  # --containerd is left out so that this dockerd runs its own containerd under its exec root.
  nohup dockerd \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --pidfile "$PIDFILE" \
    -H "unix://$SOCK" \
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
