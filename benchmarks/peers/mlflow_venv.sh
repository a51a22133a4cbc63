#!/usr/bin/env bash
# Benchmark-only venv for the MLflow peer (benchmarks/peers/mlflow_tracking.py).
# MLflow is NOT a deepdock dependency: it lives outside the repo, in ${MLFLOW_VENV:-/tmp/deepdock-bench-mlflow}.
# Pinned: mlflow 3.17.2 (3.18.0 is the newest mlflow on PyPI, but its pin mlflow-tracing==3.18.0 was not
# published on the registry this machine reaches, so 3.18.0 does not install; 3.17.2 does, on Python 3.11).
# The full `mlflow` package (not mlflow-skinny) because the tracking server is what gets measured.
# Idempotent: does nothing when the venv already has that version.
set -euo pipefail

MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
VENV="${MLFLOW_VENV:-/tmp/deepdock-bench-mlflow}"
PYTHON="${PYTHON:-python3.11}"

if [ -x "$VENV/bin/python" ] && \
   [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mlflow"))' 2>/dev/null || true)" = "$MLFLOW_VERSION" ]; then
  echo "mlflow $MLFLOW_VERSION already in $VENV"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "mlflow==$MLFLOW_VERSION"
echo "mlflow $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mlflow"))') installed in $VENV"
