#!/usr/bin/env bash
# Starts dockerd if no engine answers. The flags suit hosts without iptables or a default bridge (CI):
# containers then use user-defined networks or none, which is what deepdock asks for anyway.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if docker info >/dev/null 2>&1; then
  exit 0
fi
echo "starting dockerd"
$SUDO mkdir -p /var/log/deepdock
$SUDO sh -c 'nohup dockerd --iptables=false --bridge=none >/var/log/deepdock/dockerd.log 2>&1 &'
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not start; its log:" >&2
tail -n 50 /var/log/deepdock/dockerd.log >&2
exit 1
