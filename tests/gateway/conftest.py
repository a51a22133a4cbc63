"""Real HAProxy in front of real HTTP servers on loopback (ThreadingHTTPServer replicas)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deepdock.gateway.accesslog import AccessLog
from deepdock.gateway.haproxy import Gateway
from tests.conftest import _missing


class Replica(ThreadingHTTPServer):
    """A replica: answers who it is; ``ready``, ``status`` and ``delay_s`` are switched by a test."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name, self.ready, self.status, self.delay_s = name, True, 200, 0.0
        self.seen: list[dict[str, str | None]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy closes its health-check connections without reading the whole answer

    def kill(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Replica

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/v2/health/ready":
            self._answer(200 if self.server.ready else 503, {"ready": self.server.ready})
            return
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        self.server.seen.append({"path": self.path, "authorization": self.headers.get("authorization")})
        self._answer(self.server.status, {"replica": self.server.name, "path": self.path})

    do_POST = do_GET  # noqa: N815

    def _answer(self, status: int, doc: dict[str, object]) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    found = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/sbin"))
    if not found:
        _missing("HAProxy (apt-get install haproxy; scripts/install.sh does)")
    return found  # type: ignore[return-value]


@pytest.fixture
def replicas() -> Iterator[Callable[[str], Replica]]:
    made: list[Replica] = []

    def make(name: str) -> Replica:
        made.append(Replica(name))
        return made[-1]

    yield make
    for replica in made:
        try:
            replica.kill()
        except OSError:
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Running:
    gateway: Gateway
    access_log: AccessLog
    pids: list[int] = field(default_factory=list)


@pytest.fixture
def running(tmp_path: Path, haproxy_bin: str) -> Iterator[Running]:
    access_log = AccessLog()
    access_log.start()
    gateway = Gateway(tmp_path / "gateway", port=free_port(), log_port=access_log.port, haproxy_bin=haproxy_bin)
    gateway.start()
    try:
        yield Running(gateway, access_log)
    finally:
        gateway.stop()
        access_log.stop()
    assert not haproxy_processes(tmp_path / "gateway"), "HAProxy outlived Gateway.stop()"


def haproxy_processes(workdir: Path) -> list[int]:
    """Pids of live processes whose command line names this gateway's configuration."""
    config = str(workdir / "haproxy.cfg").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if config in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids
