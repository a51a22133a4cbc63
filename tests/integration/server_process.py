"""A real deepdock server in its own process, so tests can SIGKILL it and start it again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deepdock.client import Client
from deepdock.settings import Settings

SERVER_START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, home: Path, labels: dict[str, str], database_url: str = "", **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.env = {
            **os.environ,
            "DEEPDOCK_HOME": str(home),
            "DEEPDOCK_PORT": str(self.port),
            "DEEPDOCK_DATABASE_URL": database_url,
            "DEEPDOCK_CONTAINER_LABELS": json.dumps(labels),
            "DEEPDOCK_RECONCILE_INTERVAL_S": "0.2",
            "DEEPDOCK_NODE_HEALTH_INTERVAL_S": "1",
            "DEEPDOCK_STOP_GRACE_S": "2",
            # Short backoff: the retry tests check the retries, not the production delays (module tests do).
            "DEEPDOCK_RETRY_BACKOFF_S": "0.2",
            "DEEPDOCK_RETRY_BACKOFF_MAX_S": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "deepdock.cli.main", "server"], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def client(self) -> Client:
        return Client(self.url, settings=Settings(home=self.home))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the host loses power or the OOM killer strikes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
