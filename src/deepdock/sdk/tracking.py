"""Metrics and params from inside a job: validated here, written as event lines (sdk/protocol.py).

A bad call raises ``TrackingError`` in the job, at the call: the server never has to drop a point
silently. One ``log_metrics`` call is one ``write`` system call of one line (a few microseconds), so
logging every step is cheap, and nothing is buffered in the process: a job killed a moment later has
lost no point it logged. Outside a job (no ``DEEPDOCK_JOB_ID``) calls are checked and kept in memory
(``local_events``), so a script runs unchanged on a laptop. Standard library only.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from deepdock.sdk import protocol
from deepdock.sdk.context import current
from deepdock.sdk.protocol import TrackingError, check_name, check_param, check_step, check_value

# The container's own output: PID 1's stdout is Docker's log pipe even when the job's process has its
# own stdout redirected (``python train.py > out.txt``) or sits below a shell.
CONTAINER_STDOUT = "/proc/1/fd/1"


class _Channel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._in_job = current().in_job
        self.local: list[dict[str, Any]] = []

    def _open(self) -> int:
        try:
            return os.open(CONTAINER_STDOUT, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return os.dup(1)

    def emit(self, event: dict[str, Any]) -> None:
        line = protocol.encode(event)
        if not self._in_job:
            self.local.append(event)
            return
        with self._lock:
            if self._fd is None:
                self._fd = self._open()
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]


_channel = _Channel()
_last_step: dict[str, int] = {}
_step_lock = threading.Lock()


def log_metrics(step: int, **metrics: Any) -> None:
    """Record ``metrics`` (name=value) at ``step``. Steps of one metric must increase."""
    step = check_step(step)
    if not metrics:
        raise TrackingError("log_metrics needs at least one name=value")
    values = {check_name(name): check_value(name, value) for name, value in metrics.items()}
    with _step_lock:
        for name in values:
            last = _last_step.get(name)
            if last is not None and step <= last:
                raise TrackingError(f"metric {name!r}: step {step} is not after step {last}, the last one logged")
        for name in values:
            _last_step[name] = step
    now = time.time()
    for chunk in _chunks(values):
        _channel.emit({"k": protocol.METRICS, "s": step, "t": now, "v": chunk})


def log_metric(name: str, value: Any, step: int) -> None:
    log_metrics(step, **{name: value})


def log_params(**params: Any) -> None:
    """Record hyper-parameters (numbers, strings, booleans; anything else as its text)."""
    values = {name: check_param(name, value) for name, value in params.items()}
    for chunk in _chunks(values):
        _channel.emit({"k": protocol.PARAMS, "v": chunk})


def emit(event: dict[str, Any]) -> None:
    """For the SDK's other modules (checkpoints, models)."""
    _channel.emit(event)


def local_events() -> list[dict[str, Any]]:
    """Events recorded outside a job (a local run): what a job would have sent."""
    return list(_channel.local)


def _chunks(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Split so each line stays below ``MAX_LINE_BYTES`` (an atomic pipe write)."""
    chunks: list[dict[str, Any]] = [{}]
    size = 0
    for name, value in values.items():
        cost = len(name) + len(repr(value)) + 8
        if chunks[-1] and size + cost > protocol.MAX_LINE_BYTES - 200:
            chunks.append({})
            size = 0
        chunks[-1][name] = value
        size += cost
    return chunks
