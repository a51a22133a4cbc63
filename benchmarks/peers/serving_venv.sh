#!/usr/bin/env bash
# Benchmark-only venv for the serving peers (benchmarks/bench_serving_peers.py): BentoML and LitServe.
# Neither is a deepdock dependency: they live outside the repo, in ${SERVING_PEERS_VENV:-/tmp/deepdock-bench-serving}.
# Pinned (the newest of each on PyPI when this was written, both installing with torch==2.13.0 on Python 3.11):
#   bentoml 1.4.40, litserve 0.2.19, torch 2.13.0 (the CPU wheel this machine has on disk, the same torch that
#   deepdock's server runs in .venv, so every server calls the same libtorch on the same TorchScript file).
# Idempotent: does nothing when the venv already has those versions.
set -euo pipefail

BENTOML_VERSION="${BENTOML_VERSION:-1.4.40}"
LITSERVE_VERSION="${LITSERVE_VERSION:-0.2.19}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VENV="${SERVING_PEERS_VENV:-/tmp/deepdock-bench-serving}"
PYTHON="${PYTHON:-python3.11}"

installed() {
  "$VENV/bin/python" -c 'import importlib.metadata as m, sys
print(" ".join(m.version(p) for p in sys.argv[1:]))' bentoml litserve torch 2>/dev/null || true
}

if [ -x "$VENV/bin/python" ] && \
   [ "$(installed)" = "$BENTOML_VERSION $LITSERVE_VERSION $TORCH_VERSION+cpu" ]; then
  echo "bentoml $BENTOML_VERSION, litserve $LITSERVE_VERSION, torch $TORCH_VERSION already in $VENV"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" "bentoml==$BENTOML_VERSION" \
  "litserve==$LITSERVE_VERSION"
echo "bentoml, litserve, torch: $(installed) installed in $VENV"
