#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster and makes a 'deepdock' role for the tests; prints the URL to use.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
AS_PG="sudo -u postgres"
[ "$(id -u)" -eq 0 ] && AS_PG="runuser -u postgres --"
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  $SUDO pg_createcluster "$version" main >/dev/null
fi
$SUDO pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
  $AS_PG psql -qtAc "select 1" >/dev/null 2>&1 && break
  sleep 1
done
$AS_PG psql -qtAc "select 1 from pg_roles where rolname='deepdock'" | grep -q 1 ||
  $AS_PG psql -qc "create role deepdock login superuser password 'deepdock'" >/dev/null
echo "postgresql://deepdock:deepdock@127.0.0.1:5432/postgres"
