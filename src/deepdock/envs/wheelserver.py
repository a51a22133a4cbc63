"""A short-lived HTTP server on 127.0.0.1 that hands a build its wheels.

The classic builder has no ``RUN --mount``: without this, wheels must be COPY'd into some layer (and
then the installed tree copied again into the runtime stage). Instead, the env build runs with the
host network and ``pip install --no-index --find-links $DEEPDOCK_WHEELS/<route>/ --require-hashes``
fetches the wheels from here. Nothing but the wheels of registered routes is served, read-only, and
only while a build holds the server.

The port is fixed (``settings.wheel_port``, env ``DEEPDOCK_WHEEL_PORT``, default :data:`DEFAULT_PORT`;
the caller passes it) because build args are part
of the classic builder's cache key: a port that changed per build would defeat the layer cache. One
server per process serves any number of concurrent builds (each route is ``<group>-<hash of its
pins>``). When another process holds the port (another deepdock build), we wait for it up to
:data:`PORT_WAIT_S`, then fail with a clear error.
"""

from __future__ import annotations

import errno
import html
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from deepdock.errors import BuildError

HOST = "127.0.0.1"
DEFAULT_PORT = 47811
PORT_ENV = "DEEPDOCK_WHEEL_PORT"  # named in errors: where an operator sets the port (settings.wheel_port)
PORT_WAIT_S = 600  # another process's build holds the port at most this long before we give up
PORT_RETRY_S = 1.0
SEND_CHUNK_BYTES = 1 << 20

Progress = Callable[[str], None]

_lock = threading.Lock()
_routes: dict[str, list[Path]] = {}  # route -> the directories registered for it (a stack: same route twice)
_server: ThreadingHTTPServer | None = None
_users = 0


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BuildError(f"{PORT_ENV}={port!r} is not a port number (1-65535)", step="engine")
    return port


class _Handler(BaseHTTPRequestHandler):
    server_version = "deepdock-wheels"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        return  # quiet: pip's own output says what it fetched

    def _target(self) -> tuple[Path | None, str]:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        with _lock:
            dirs = _routes.get(parts[0]) if parts else None
            directory = dirs[-1] if dirs else None
        if directory is None or len(parts) > 2:
            return None, ""
        return directory, parts[1] if len(parts) == 2 else ""

    def _serve(self, body: bool) -> None:
        directory, name = self._target()
        if directory is None:
            self.send_error(404)
            return
        if not name:
            if not self.path.endswith("/"):
                self.send_error(404)
                return
            links = "".join(f'<a href="{html.escape(urllib.parse.quote(p.name))}">{html.escape(p.name)}</a>\n'
                            for p in sorted(directory.iterdir()) if p.name.endswith(".whl"))
            data = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        file = directory / name
        if "/" in name or not name.endswith(".whl") or not file.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(file.stat().st_size))
        self.end_headers()
        if body:
            with file.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile, SEND_CHUNK_BYTES)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)


def _bind(port: int, say: Progress) -> ThreadingHTTPServer:
    deadline = time.monotonic() + PORT_WAIT_S
    told = False
    while True:
        try:
            server = ThreadingHTTPServer((HOST, port), _Handler)
            server.daemon_threads = True
            return server
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise BuildError(f"cannot serve wheels on {HOST}:{port}: {exc}", step="engine") from None
            if time.monotonic() >= deadline:
                raise BuildError(
                    f"{HOST}:{port} is in use: deepdock serves wheels to its builds on this port. Another "
                    f"deepdock build may still be running (waited {PORT_WAIT_S} s); otherwise set "
                    f"{PORT_ENV} to a free port.", step="engine") from None
            if not told:
                say(f"env: {HOST}:{port} is in use (another deepdock build?); waiting up to {PORT_WAIT_S} s")
                told = True
            time.sleep(PORT_RETRY_S)


@contextmanager
def serve_wheels(
    routes: dict[str, Path], progress: Progress | None = None, *, port: int = DEFAULT_PORT
) -> Iterator[str]:
    """Serve ``routes`` (URL path segment → directory of wheels) while the block runs; yield the base URL
    (``http://127.0.0.1:<port>``). Nested and concurrent uses share one server (the first one's port)."""
    global _server, _users
    say = progress or (lambda _msg: None)
    port = check_port(port)
    with _lock:
        if _server is None:
            _server = _bind(port, say)
            threading.Thread(target=_server.serve_forever, name="deepdock-wheels", daemon=True).start()
        _users += 1
        server = _server
        for route, directory in routes.items():
            _routes.setdefault(route, []).append(directory)
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        with _lock:
            for route, directory in routes.items():
                stack = _routes.get(route, [])
                if directory in stack:
                    stack.remove(directory)
                if not stack:
                    _routes.pop(route, None)
            _users -= 1
            stop = _server if _users == 0 else None
            if stop is not None:
                _server = None
        if stop is not None:
            stop.shutdown()
            stop.server_close()
