"""Metrics and params from inside a job: validated here, written as event lines (sdk/protocol.py).

A bad call raises ``TrackingError`` in the job, at the call: the server never has to drop a point
silently. Metrics are batched: the steps logged within ``FLUSH_INTERVAL_S`` go out as one line (up to
``MAX_LINE_BYTES``), written by the next call, by a small flusher thread when the job goes quiet, before
any other event (so a checkpoint never overtakes the metrics before it) and at exit. Why: every output
line costs the Docker engine's log driver and the server's follower work on the same cores as the
training: with a line per step the digits job measured 23% slower on 2 cores (docs/benchmarks.md has
the figures, and the ones with batching). The price: a job SIGKILLed loses at most the last ``FLUSH_INTERVAL_S`` of points (a
server restart loses none). Outside a job (no ``DEEPDOCK_JOB_ID``) calls are checked and kept in memory
(``local_events``), so a script runs unchanged on a laptop. Standard library only.
"""

from __future__ import annotations

import atexit
import json
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


# How long logged metrics may wait before they are written (DEEPDOCK_METRICS_FLUSH_S): what a point's
# latency to the server pays for fewer output lines.
FLUSH_INTERVAL_S = float(os.environ.get("DEEPDOCK_METRICS_FLUSH_S", "") or 0.2)
# What one batch line may hold: below PIPE_BUF with the marker and the envelope around it.
BATCH_BYTES = protocol.MAX_LINE_BYTES - 64


class _Channel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._in_job = current().in_job
        self.local: list[dict[str, Any]] = []
        # Logged but not yet written: (step, time, values), encoded at flush, once for the whole batch.
        self._batch: list[tuple[int, float, dict[str, float]]] = []
        self._batch_bytes = 0
        self._batch_since = 0.0
        self._flusher: threading.Thread | None = None
        self._registered = False

    def _open(self) -> int:
        try:
            return os.open(CONTAINER_STDOUT, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return os.dup(1)

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            self._fd = self._open()
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]

    def _flush_locked(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[int, float, dict[str, float]]]) -> None:
        line = (protocol.MARKER + json.dumps({"k": protocol.BATCH, "e": [{"s": s, "t": t, "v": v} for s, t, v in batch]},
                                             separators=(",", ":"), allow_nan=False) + "\n").encode()
        if len(line) > protocol.MAX_LINE_BYTES and len(batch) > 1:  # the size estimate was short: halve
            half = len(batch) // 2
            self._write_batch(batch[:half])
            self._write_batch(batch[half:])
            return
        self._write(line)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def emit(self, event: dict[str, Any]) -> None:
        if not self._in_job:
            self.local.append(event)
            return
        with self._lock:
            self._flush_locked()  # keep the order: what was logged before this event goes first
            self._write(protocol.encode(event))

    def emit_metrics(self, step: int, at: float, values: dict[str, float], size: int) -> None:
        """``size``: the caller's estimate of the encoded item's bytes (what decides when a line is full)."""
        if not self._in_job:
            self.local.append({"k": protocol.METRICS, "s": step, "t": at, "v": values})
            return
        with self._lock:
            if self._batch and self._batch_bytes + size > BATCH_BYTES:
                self._flush_locked()
            if not self._batch:
                self._batch_since = at
                if self._flusher is None:
                    self._start_flusher()
            self._batch.append((step, at, values))
            self._batch_bytes += size
            if at - self._batch_since >= FLUSH_INTERVAL_S:
                self._flush_locked()

    def _start_flusher(self) -> None:
        if not self._registered:
            atexit.register(self.flush)
            self._registered = True
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_loop, name="deepdock-sdk-flush", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        """Flush a batch a quiet job left (it logged, then went on with something long)."""
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            with self._lock:
                if self._batch and time.time() - self._batch_since >= FLUSH_INTERVAL_S:
                    self._flush_locked()


_channel = _Channel()
_last_step: dict[str, int] = {}
_step_lock = threading.Lock()
# Names already checked, with what each adds to an encoded item: the hot path skips the regex.
_name_cost: dict[str, int] = {}
# An item's bytes besides its names and values: {"s":...,"t":...,"v":{}} and separators.
ITEM_OVERHEAD_BYTES = 48
VALUE_BYTES = 26  # a float's repr, its quotes-free key separator and comma


def log_metrics(step: int, **metrics: Any) -> None:
    """Record ``metrics`` (name=value) at ``step``. Steps of one metric must increase.

    The hot path (a known name, a Python float or int, an int step) is a few microseconds: names are
    checked once, values by type, and the encoding waits for the batch's flush."""
    if type(step) is not int or step < 0:
        step = check_step(step)
    if not metrics:
        raise TrackingError("log_metrics needs at least one name=value")
    values: dict[str, float] = {}
    size = ITEM_OVERHEAD_BYTES
    for name, value in metrics.items():
        cost = _name_cost.get(name)
        if cost is None:
            check_name(name)
            cost = _name_cost[name] = len(name) + VALUE_BYTES
        kind = type(value)
        if kind is float and value - value == 0.0:  # finite (NaN and infinities give NaN here)
            values[name] = value
        elif kind is int:
            values[name] = float(value)
        else:
            values[name] = check_value(name, value)
        size += cost
    with _step_lock:
        for name in values:
            last = _last_step.get(name)
            if last is not None and step <= last:
                raise TrackingError(f"metric {name!r}: step {step} is not after step {last}, the last one logged")
        for name in values:
            _last_step[name] = step
    now = time.time()
    if size <= BATCH_BYTES:
        _channel.emit_metrics(step, now, values, size)
        return
    for chunk in _chunks(values):  # more values than one line holds: several items of the same step
        _channel.emit_metrics(step, now, chunk, ITEM_OVERHEAD_BYTES + sum(_name_cost[n] for n in chunk))


def log_metric(name: str, value: Any, step: int) -> None:
    log_metrics(step, **{name: value})


def log_params(**params: Any) -> None:
    """Record hyper-parameters (numbers, strings, booleans; anything else as its text)."""
    values = {name: check_param(name, value) for name, value in params.items()}
    for chunk in _chunks(values):
        _channel.emit({"k": protocol.PARAMS, "v": chunk})


def emit(event: dict[str, Any]) -> None:
    """For the SDK's other modules (checkpoints, models): written at once, after the metrics before it."""
    _channel.emit(event)


def flush() -> None:
    """Write the metrics batched so far (the SDK does this itself; for a job about to ``os._exit``)."""
    _channel.flush()


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
