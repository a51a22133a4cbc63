"""Peer figures: MLflow's tracking server on this machine, to set beside deepdock's tracking numbers.

    .venv/bin/python benchmarks/peers/mlflow_tracking.py [--series 10] [--steps 10000] [--batch 1000]

Why: a throughput figure means little alone; the same workload against MLflow, in the same run on the
same 2-core machine, says where deepdock stands. How: MLflow is no deepdock dependency, so it lives in a
separate venv (``mlflow_venv.sh``, default ``/tmp/deepdock-bench-mlflow``). This module imports no mlflow:
it starts ``mlflow server`` (SQLite store, one uvicorn worker, like deepdock's single-process server)
from that venv in a temp dir, runs ``_mlflow_driver.py`` with the venv's python against it (which prints
one JSON line), then stops the server and removes the temp dir. Standard library only, so it runs with
either the repo's python or the venv's.

Workload: one run gets ``series`` x ``steps`` points ("m0".. at steps 0..steps-1) through
``MlflowClient.log_batch`` in batches of ``batch`` (MLflow caps a log_batch at 1000 metrics); then a
second run gets one 100,000-point series "long". Reads are full ``get_metric_history`` calls, which the
client pages through 25,000 points per REST request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "_mlflow_driver.py"
VENV_SCRIPT = HERE / "mlflow_venv.sh"
DEFAULT_VENV = Path(os.environ.get("MLFLOW_VENV", "/tmp/deepdock-bench-mlflow"))
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DRIVER_TIMEOUT_S = 1200.0  # generous: a slow log_batch path is reported, not cut short
LONG_STEPS = 100_000
READ_REPEATS = 5
# Quiet, offline server and client: no usage telemetry attempts (this machine has no network anyway).
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_venv(venv: Path) -> None:
    """Create the benchmark venv when its python or mlflow is missing (the script itself is idempotent)."""
    mlflow_bin = venv / "bin" / "mlflow"
    if not mlflow_bin.exists():
        subprocess.run(["bash", str(VENV_SCRIPT)], check=True, env={**os.environ, "MLFLOW_VENV": str(venv)}, timeout=900)


def supports_option(venv: Path, option: str) -> bool:
    help_text = subprocess.run([str(venv / "bin" / "mlflow"), "server", "--help"], capture_output=True, text=True,
                               timeout=120, env={**os.environ, **QUIET_ENV}).stdout
    return option in help_text


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < START_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow server did not answer /health in {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group (it forks uvicorn), SIGKILL after STOP_TIMEOUT_S."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    try:  # a worker that outlived its parent is still in the group
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def measure_mlflow(series: int = 10, steps: int = 10_000, batch: int = 1000, venv: Path | None = None,
                   long_steps: int = LONG_STEPS, repeats: int = READ_REPEATS) -> dict[str, Any]:
    """Start an MLflow tracking server from the benchmark venv, run the workload against it, return the figures."""
    venv = venv or DEFAULT_VENV
    ensure_venv(venv)
    tmp = Path(tempfile.mkdtemp(prefix="deepdock-bench-mlflow-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = ["--backend-store-uri", f"sqlite:///{tmp}/mlflow.db", "--default-artifact-root", str(tmp / "art"),
               "--host", "127.0.0.1", "--port", str(port)]
    if supports_option(venv, "--workers"):
        options += ["--workers", "1"]
    env = {**os.environ, **QUIET_ENV}
    log = tmp / "server.log"
    t_start = time.monotonic()
    with log.open("wb") as log_file:
        proc = subprocess.Popen([str(venv / "bin" / "mlflow"), "server", *options], stdout=log_file,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        start_s = wait_healthy(url, proc, log)
        driver = subprocess.run([str(venv / "bin" / "python"), str(DRIVER), url, str(series), str(steps), str(batch),
                                 str(long_steps), str(repeats)], capture_output=True, text=True, env=env,
                                timeout=DRIVER_TIMEOUT_S)
        sys.stderr.write(driver.stderr)
        if driver.returncode != 0:
            raise RuntimeError(f"driver failed ({driver.returncode}); server log:\n{log.read_text()[-3000:]}")
        result: dict[str, Any] = json.loads(driver.stdout.strip().splitlines()[-1])
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    ordered = {"mlflow_version": result.pop("mlflow_version"),
               "server_options": ["mlflow", "server", *[o.replace(str(tmp), "TMP") for o in options]],
               "server_start_s": round(start_s, 2)}
    return {**ordered, **result, "total_s": round(time.monotonic() - t_start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--venv", type=Path, default=None)
    parser.add_argument("--long-steps", type=int, default=LONG_STEPS)
    parser.add_argument("--repeats", type=int, default=READ_REPEATS)
    args = parser.parse_args()
    print(json.dumps(measure_mlflow(args.series, args.steps, args.batch, args.venv, args.long_steps, args.repeats), indent=2))


if __name__ == "__main__":
    main()
