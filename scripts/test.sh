#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, starts the Docker engine and
# PostgreSQL, bootstraps the offline base image, then runs the whole suite against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
DEEPDOCK_TEST_POSTGRES_URL=${DEEPDOCK_TEST_POSTGRES_URL:-$(bash scripts/start_postgres.sh | tail -n 1)}
export DEEPDOCK_TEST_POSTGRES_URL
# No registry is reachable in CI: the base images come from Debian packages (cached after the first run).
.venv/bin/deepdock base bootstrap
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
