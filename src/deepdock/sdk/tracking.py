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
import math
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
# What one batch line may hold: below PIPE_BUF with the marker, the envelope and the groups' names (a
# line that still comes out longer is split in two, _write_batch).
BATCH_BYTES = protocol.MAX_LINE_BYTES - 384


class _Channel:
    """The job's event output. ``log_metrics``' hot path reads and writes ``batch``, ``room``, ``deadline``
    and ``max_step`` itself, under ``lock``: one Python frame per call (see log_metrics)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._fd: int | None = None
        self.in_job = current().in_job
        self.local: list[dict[str, Any]] = []
        # Logged but not yet written: (step, time, values), encoded at flush, once for the whole batch.
        self.batch: list[tuple[int, float, dict[str, float]]] = []
        self.room = BATCH_BYTES  # what the batch's line can still take
        self.deadline = math.inf  # when the batch must be written (its first item's time + FLUSH_INTERVAL_S)
        # The highest step any metric was logged at: a step above it is after each metric's own last
        # step, so the hot path needs no per-metric check. Those per-metric steps (_last_step) are brought
        # up to date from the batch only when the checked path needs them (settle_locked).
        self.max_step = -1
        self._settled = 0  # items of the batch already counted in _last_step
        self.flusher: threading.Thread | None = None
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

    def settle_locked(self) -> None:
        for step, _, values in self.batch[self._settled:]:
            _last_step.update(dict.fromkeys(values, step))
        self._settled = len(self.batch)

    def flush_locked(self) -> None:
        if not self.batch:
            return
        self.settle_locked()
        batch = self.batch
        self.batch, self.room, self.deadline, self._settled = [], BATCH_BYTES, math.inf, 0
        self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[int, float, dict[str, float]]]) -> None:
        line = (protocol.MARKER + json.dumps(protocol.encode_columns(batch), separators=(",", ":")) + "\n").encode()
        if len(line) > protocol.MAX_LINE_BYTES:  # the size estimate was short (many names): split
            if len(batch) > 1:
                half = len(batch) // 2
                self._write_batch(batch[:half])
                self._write_batch(batch[half:])
                return
            step, at, values = batch[0]
            chunks = _chunks(values)
            if len(chunks) > 1:  # one step of many long names: several items of that step
                for chunk in chunks:
                    self._write_batch([(step, at, chunk)])
                return
        self._write(line)

    def flush(self) -> None:
        with self.lock:
            self.flush_locked()

    def emit(self, event: dict[str, Any]) -> None:
        if not self.in_job:
            self.local.append(event)
            return
        with self.lock:
            self.flush_locked()  # keep the order: what was logged before this event goes first
            self._write(protocol.encode(event))

    def append_locked(self, step: int, at: float, values: dict[str, float], size: int) -> None:
        """``size``: the caller's estimate of the encoded item's bytes (what decides when a line is full)."""
        if not self.in_job:
            self.local.append({"k": protocol.METRICS, "s": step, "t": at, "v": values})
            return
        if self.batch and size > self.room:
            self.flush_locked()
        if not self.batch:
            self.first_item_locked(at)
        self.batch.append((step, at, values))
        self.room -= size
        if at >= self.deadline:
            self.flush_locked()

    def first_item_locked(self, at: float) -> None:
        self.deadline = at + FLUSH_INTERVAL_S
        if self.flusher is None or not self.flusher.is_alive():
            if not self._registered:
                atexit.register(self.flush)
                self._registered = True
            self.flusher = threading.Thread(target=self._flush_loop, name="deepdock-sdk-flush", daemon=True)
            self.flusher.start()

    def _flush_loop(self) -> None:
        """Flush a batch a quiet job left (it logged, then went on with something long)."""
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            with self.lock:
                if self.batch and time.time() >= self.deadline:
                    self.flush_locked()


_last_step: dict[str, int] = {}
# Names already checked, with what each adds to an encoded item: the hot path skips the regex.
_name_cost: dict[str, int] = {}
# An item's bytes in a columns line (protocol.encode_columns): its step and time, 8 bytes each in base64.
ITEM_OVERHEAD_BYTES = 22
VALUE_BYTES = 11  # a float64 in base64
# A name is written once per group of a line, not per item: lines keep BATCH_BYTES' reserve for them, and
# a call whose names alone would not fit is split (_log_checked, _chunks). Around each name: quotes, comma.
NAME_BYTES = 3
_channel = _Channel()
_now = time.time


def log_metrics(step: int, **metrics: Any) -> None:
    """Record ``metrics`` (name=value) at ``step``. Steps of one metric must increase.

    The hot path (names seen before, Python floats, a step above every step logged so far, room in the
    batch's line: a training loop's every call) is this one frame: a type test and a subtraction per
    value, the kwargs dict kept as the batch's item, the per-metric step bookkeeping and the encoding
    left for later. Why it matters: between a training step's tensor ops the call runs with cold caches,
    where it measured several times its warm cost (docs/benchmarks.md). Anything else takes the
    checked path, which validates and converts each value and each metric's own step order, raises
    ``TrackingError``, and writes a full line."""
    size = ITEM_OVERHEAD_BYTES
    for name, value in metrics.items():
        cost = _name_cost.get(name)
        if cost is None or type(value) is not float or value - value != 0.0:  # NaN and infinities give NaN
            break
        size += cost
    else:
        channel = _channel
        if type(step) is int and step > channel.max_step and size <= channel.room and channel.in_job and metrics:
            with channel.lock:
                if step > channel.max_step and size <= channel.room:
                    # append_locked's steps, inlined: a frame less per call is what this path is for
                    now = _now()
                    channel.max_step = step
                    if not channel.batch:
                        channel.first_item_locked(now)
                    channel.batch.append((step, now, metrics))
                    channel.room -= size
                    if now >= channel.deadline:
                        channel.flush_locked()
                    return
    _log_checked(step, metrics)


def _log_checked(step: Any, metrics: dict[str, Any]) -> None:
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
            cost = _name_cost[name] = VALUE_BYTES
        kind = type(value)
        if kind is float and value - value == 0.0:
            values[name] = value
        elif kind is int:
            values[name] = float(value)
        else:
            values[name] = check_value(name, value)
        size += cost
    channel = _channel
    with channel.lock:
        channel.settle_locked()
        for name in values:
            last = _last_step.get(name)
            if last is not None and step <= last:
                raise TrackingError(f"metric {name!r}: step {step} is not after step {last}, the last one logged")
        for name in values:
            _last_step[name] = step
        if step > channel.max_step:
            channel.max_step = step
        now = _now()
        if size + sum(len(name) + NAME_BYTES for name in values) <= BATCH_BYTES:
            channel.append_locked(step, now, values, size)
        else:  # more values than one line holds: several items of the same step
            for chunk in _chunks(values):
                channel.append_locked(step, now, chunk, ITEM_OVERHEAD_BYTES + sum(_name_cost[n] for n in chunk))


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
        # a value as JSON (a param) or as a base64 float64 in a columns line (16 with its quotes and comma)
        cost = len(name) + max(len(repr(value)), 16) + 8
        if chunks[-1] and size + cost > protocol.MAX_LINE_BYTES - 200:
            chunks.append({})
            size = 0
        chunks[-1][name] = value
        size += cost
    return chunks
