#!/usr/bin/env bash
# Installs deepdock and what it needs on a fresh Debian 12 machine (run as root or with sudo):
# Docker's engine from Debian's docker.io (started if no engine answers), debootstrap for offline base
# images, busybox-static for the test image, openssl for the TLS test engine, dnsmasq-base for the
# namespace test hosts' DNS stub, PostgreSQL, HAProxy for the services gateway, and a virtualenv with
# deepdock in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need_pkgs+=(debootstrap)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v openssl >/dev/null || need_pkgs+=(openssl)  # certificates of the TLS test engine
# dnsmasq-base: the DNS stub (no upstream) of the namespace test hosts, scripts/netns_hosts.sh
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need_pkgs+=(dnsmasq-base)
[ -d /usr/lib/postgresql ] || need_pkgs+=(postgresql)
# haproxy: the services gateway (deepdock.gateway); the server runs its own instance, not the system's.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
# prometheus (with promtool): the monitoring test scrapes a real server with the shipped config and rules.
command -v prometheus >/dev/null || need_pkgs+=(prometheus)
# chromium: the dashboard's tests drive Debian's browser with Playwright (its own browser download does not
# work offline).
command -v chromium >/dev/null || need_pkgs+=(chromium)
python3 -c "import venv, ensurepip" 2>/dev/null || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# Debian starts the system's haproxy on install; deepdock runs its own, so the system one stays off.
if command -v systemctl >/dev/null && systemctl is-active --quiet haproxy 2>/dev/null; then
  $SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true
elif [ -f /run/haproxy.pid ] && command -v service >/dev/null; then
  $SUDO service haproxy stop >/dev/null 2>&1 || true  # no systemd (a container): its init script started it
fi

bash scripts/start_docker.sh

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
echo "deepdock installed: $(.venv/bin/deepdock version)"
