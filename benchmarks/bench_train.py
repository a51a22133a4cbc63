"""Training throughput of the digits job in a deepdock container vs the same script as a bare process.

    .venv/bin/pip install torch==2.13.0 scikit-learn==1.5.2     # for the bare-process side
    .venv/bin/python -m benchmarks.bench_train [--rounds 3] [--epochs 30]

Both sides run src/deepdock/demo/train_digits.py with the same thread count and report samples/s of the
training loop itself (data loading and interpreter start excluded). Rounds alternate bare, container,
bare, container… so that drift in machine load hits both; the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from benchmarks._server import BenchServer
from deepdock.client import Client
from deepdock.envs import build_env
from deepdock.settings import Settings
from deepdock.specs.job import load_job_spec

RATE_RE = re.compile(rb"samples_per_second=([0-9.]+)")
CPUS = 2


def bare(script: Path, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "EPOCHS": str(epochs), "DEEPDOCK_CPUS": str(CPUS), "DEEPDOCK_ARTIFACTS_DIR": out}
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, check=True)
    return float(RATE_RE.search(proc.stdout).group(1))  # type: ignore[union-attr]


def in_container(c: Client, spec, epochs: int) -> float:  # type: ignore[no-untyped-def]
    spec = spec.model_copy(update={"env": {**spec.env, "EPOCHS": str(epochs), "DEEPDOCK_CPUS": str(CPUS)}})
    job = c.run(spec)
    while (d := c.job(job.id)).status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(0.5)
    if d.status != "SUCCEEDED":
        raise RuntimeError(f"job failed: {d.status_reason}\n{b''.join(c.logs(job.id)).decode()[-2000:]}")
    return float(RATE_RE.search(b"".join(c.logs(job.id))).group(1))  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    demo = Path(str(resources.files("deepdock.demo")))
    spec = load_job_spec(demo / "job.yaml")
    spec.resources.cpus = CPUS
    build_env(spec.environment, offline=True)  # the image is present before timing starts
    bare_rates, container_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with BenchServer(home) as srv, Client(srv.url, srv.token, settings=Settings(home=home)) as c:
            for _ in range(args.rounds):
                bare_rates.append(bare(demo / "train_digits.py", args.epochs))
                container_rates.append(in_container(c, spec, args.epochs))
    result = {
        "bare_samples_per_s": bare_rates,
        "container_samples_per_s": container_rates,
        "ratio_container_vs_bare": statistics.median(container_rates) / statistics.median(bare_rates),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
