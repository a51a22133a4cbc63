"""The gateway's access log, received from HAProxy over UDP and kept in memory as per-service windows.

The rollout step judges a canary and autoscales from it: for a service (and optionally one revision),
over the last N seconds, how many requests, how many failed, their p50/p99 latency, the request rate and
the mean concurrency (Little's law: the sum of the requests' active times over the window). Measuring at
the proxy sees what callers see, including requests that no replica answered.

A request counts once it reached a replica or failed at the proxy (5xx, or an aborted server side); a
401 or 404 that HAProxy answered itself is the caller's mistake and is left out. Entries older than
``RETAIN_S`` are dropped; a window longer than that sees only what is kept.
"""

from __future__ import annotations

import bisect
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

from deepdock.gateway.config import BACKEND_PREFIX, LOG_TAG
from deepdock.gateway.routes import revision_of_server

log = logging.getLogger("deepdock.gateway")

RETAIN_S = 900.0
MAX_ENTRIES_PER_ROUTE = 500_000
RECEIVE_BUFFER_BYTES = 8 << 20
NO_SERVER = "<NOSRV>"


@dataclass(frozen=True)
class Entry:
    at: float
    revision: int | None
    status: int
    active_ms: float
    error: bool


@dataclass(frozen=True)
class WindowStats:
    requests: int
    errors: int
    error_rate: float
    p50_ms: float
    p99_ms: float
    rps: float
    concurrency: float


EMPTY = WindowStats(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)


def parse(line: str, at: float) -> tuple[str, Entry] | None:
    """One log line (``config.LOG_FORMAT``) → (route key, entry); None for anything else."""
    fields = line.split()
    if len(fields) != 7 or fields[0] != LOG_TAG or not fields[1].startswith(BACKEND_PREFIX):
        return None
    _, backend, server, status_text, active_text, _response, termination = fields
    try:
        status, active_ms = int(status_text), float(active_text)
    except ValueError:
        return None
    # Termination state: its first letter says who ended the session; S/P/R/I are the server side or
    # HAProxy itself (a replica that died mid-request); C is the caller giving up, not the service failing.
    proxy_failure = termination[:1] in ("S", "P", "R", "I")
    error = status >= 500 or status <= 0 or proxy_failure
    if server == NO_SERVER and not error:
        return None
    return backend[len(BACKEND_PREFIX):], Entry(at, revision_of_server(server), status, max(0.0, active_ms), error)


class AccessLog:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        self._sock.bind((host, port))
        self._sock.settimeout(0.5)
        self.port: int = self._sock.getsockname()[1]
        self._entries: dict[str, deque[Entry]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._receive, name="deepdock-gateway-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()

    def record(self, key: str, entry: Entry) -> None:
        with self._lock:
            entries = self._entries.setdefault(key, deque(maxlen=MAX_ENTRIES_PER_ROUTE))
            entries.append(entry)
            while entries and entries[0].at < entry.at - RETAIN_S:
                entries.popleft()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            parsed = parse(datagram.decode(errors="replace"), time.time())
            if parsed is not None:
                self.record(*parsed)

    def window(self, route_key: str, seconds: float, *, revision: int | None = None,
               now: float | None = None) -> WindowStats:
        now = time.time() if now is None else now
        since = now - seconds
        with self._lock:
            entries = list(self._entries.get(route_key, ()))
        # Entries arrive in time order: the window is a suffix.
        start = bisect.bisect_left([e.at for e in entries], since)
        chosen = [e for e in entries[start:] if e.at <= now and (revision is None or e.revision == revision)]
        if not chosen:
            return EMPTY
        errors = sum(e.error for e in chosen)
        latencies = sorted(e.active_ms for e in chosen)
        return WindowStats(
            requests=len(chosen), errors=errors, error_rate=errors / len(chosen),
            p50_ms=_quantile(latencies, 0.50), p99_ms=_quantile(latencies, 0.99),
            rps=len(chosen) / seconds, concurrency=sum(latencies) / 1000.0 / seconds)

    def revisions_seen(self, route_key: str) -> set[int]:
        with self._lock:
            return {e.revision for e in self._entries.get(route_key, ()) if e.revision is not None}


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted list."""
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return ordered[rank - 1]
