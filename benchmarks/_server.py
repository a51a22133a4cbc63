"""A deepdock server in a subprocess for benchmarks (the same code path as `deepdock server`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deepdock.config import read_config
from deepdock.settings import Settings

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.env = {**os.environ, "DEEPDOCK_HOME": str(home), "DEEPDOCK_PORT": str(self.port), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return read_config(Settings(home=self.home))["token"]

    def __enter__(self) -> BenchServer:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "deepdock.cli.main", "server"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("benchmark server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def remove_containers(label: dict[str, str]) -> None:
    """Every container (running or not) on this host's engine carrying ``label``: what a benchmark's
    server started, left behind when the server stops (deepdock adopts containers, it does not kill them)."""
    import docker

    (key, value), = label.items()
    engine = docker.from_env()
    try:
        for container in engine.containers.list(all=True, filters={"label": f"{key}={value}"}):
            container.remove(force=True)
    finally:
        engine.close()
