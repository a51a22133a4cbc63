"""Wake-ups across processes: API workers tell the control process that the scheduler has work.

With several API worker processes (`deepdock server --workers N`), a submit lands in a worker while the
scheduler runs in the control process. Without a signal the job would wait for the scheduler's idle
period (seconds); with one, the next cycle starts within a millisecond. A unix datagram socket is the
cheapest signal there is: connectionless, one `sendto` per wake-up, no broker, and a lost datagram costs
only latency (the idle period still runs the cycle), never correctness.

A server on another host (PostgreSQL deployments with several servers) cannot reach the socket; its
submits are picked up by the idle period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger("deepdock.server")

SCHEDULER = b"s"
RECONCILER = b"r"
ROLLOUT = b"o"
TARGETS = {"scheduler": SCHEDULER, "reconciler": RECONCILER, "rollout": ROLLOUT}


def wake_socket_path(home: Path) -> Path:
    return home / "run" / "wake.sock"


class WakeSender:
    """Used in API workers: best-effort, non-blocking."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, target: str) -> None:
        try:
            self._sock.sendto(TARGETS[target], self.path)
        except OSError:
            # No control process listening (restarting) or its buffer is full (it is already awake).
            pass

    def close(self) -> None:
        self._sock.close()


class WakeListener:
    """Runs in the control process: turns datagrams into the loops' wake-up events."""

    def __init__(self, path: Path, events: dict[bytes, threading.Event]) -> None:
        self.path = path
        self.events = events
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a control process that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        os.chmod(path, 0o600)
        self._thread = threading.Thread(target=self._run, name="deepdock-wake", daemon=True)
        self._closed = False

    def start(self) -> WakeListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(64)
            except OSError:
                return  # closed
            for byte in set(data):
                event = self.events.get(bytes([byte]))
                if event is not None:
                    event.set()

    def close(self) -> None:
        self._closed = True
        # shutdown() unblocks recv() in the listener thread; close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
