"""Helpers for fault and load tests against real engines: freezing the second engine's dockerd, and
recording every container event of an engine while a test runs.

``frozen_engine`` SIGSTOPs the second engine's dockerd (pid in ``ENGINE2_PIDFILE``, written by
scripts/second_engine.sh): it stops answering without closing its socket, as a hung or swapping host does.
Its containerd is a separate process and keeps the containers running. SIGCONT is always sent on the
way out, also when the test fails.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

ENGINE2_PIDFILE = Path("/run/deepdock-engine2.pid")
# How long ``EngineEvents.stop`` waits for the last events of the engine to arrive before closing.
EVENTS_SETTLE_S = 1.0
EVENTS_JOIN_TIMEOUT_S = 10.0


def engine2_pid() -> int:
    return int(ENGINE2_PIDFILE.read_text().strip())


def _process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ("T" when stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


@contextmanager
def frozen_engine(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the duration of the block; SIGCONT on the way out, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while _process_state(pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def thaw(pid: int) -> None:
    """SIGCONT, ignoring a process that is gone (a fixture's last line of defence)."""
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


@dataclass
class EngineEvents:
    """Every container event carrying ``label`` on one engine, streamed in a thread from ``start()``.

    dockerd keeps only its last 256 events, so a load test cannot ask afterwards: it must listen live.
    ``since`` replays what happened between ``start()`` and the stream's connection.
    """

    engine_url: str
    label: str
    events: list[dict[str, Any]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stream: Any = None
    _api: Any = None
    _error: BaseException | None = None

    def start(self) -> EngineEvents:
        self._api = docker.APIClient(base_url=self.engine_url, version="1.41", timeout=30)
        self._stream = self._api.events(since=int(time.time()) - 1, decode=True,
                                        filters={"type": "container", "label": self.label})
        self._thread = threading.Thread(target=self._read, name=f"events-{self.engine_url}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for event in self._stream:
                self.events.append(event)
        except Exception as exc:  # noqa: BLE001 - reported by stop()
            self._error = exc

    def stop(self) -> None:
        time.sleep(EVENTS_SETTLE_S)
        if self._stream is not None:
            self._stream.close()
        if self._thread is not None:
            self._thread.join(EVENTS_JOIN_TIMEOUT_S)
        if self._api is not None:
            self._api.close()

    def by_job(self, action: str, job_label: str = "deepdock.job") -> dict[str, list[dict[str, Any]]]:
        """The events of one action ("create", "start", "die", ...) grouped by the job label."""
        out: dict[str, list[dict[str, Any]]] = {}
        for event in self.events:
            if event.get("Action") == action:
                attrs = event.get("Actor", {}).get("Attributes", {})
                out.setdefault(attrs.get(job_label, ""), []).append(attrs)
        return out
