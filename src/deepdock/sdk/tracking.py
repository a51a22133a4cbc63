"""Metrics and params from inside a job: validated here, written as event lines (sdk/protocol.py).

A bad call raises ``TrackingError`` in the job, at the call: the server never has to drop a point
silently. Metrics are batched: a call only appends its step to a pending list, and a flusher thread
writes what is pending every ``FLUSH_INTERVAL_S`` as lines of up to ``MAX_LINE_BYTES``; any other event
flushes first (so a checkpoint never overtakes the metrics before it), and so does exit. Why: every
output line costs the Docker engine's log driver and the server's follower work on the same cores as the
training (with a line per step the digits job measured 23% slower on 2 cores), and anything the call
itself does runs with cold caches between a training step's tensor ops (docs/benchmarks.md has the
figures). The price: a job SIGKILLed loses at most the last ``FLUSH_INTERVAL_S`` of points (a server
restart loses none). Outside a job (no ``DEEPDOCK_JOB_ID``) calls are checked the same and kept in memory
(``local_events``), so a script runs unchanged on a laptop. Standard library only.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from typing import Any

from deepdock.sdk import protocol
from deepdock.sdk.context import current
from deepdock.sdk.protocol import MAX_STEP, TrackingError, check_name, check_param, check_step, check_value

# The container's own output: PID 1's stdout is Docker's log pipe even when the job's process has its
# own stdout redirected (``python train.py > out.txt``) or sits below a shell.
CONTAINER_STDOUT = "/proc/1/fd/1"


# How long logged metrics may wait before they are written (DEEPDOCK_METRICS_FLUSH_S): what a point's
# latency to the server pays for fewer output lines.
# At least 10 ms: 0 would make the flusher a busy loop.
FLUSH_INTERVAL_S = max(0.01, float(os.environ.get("DEEPDOCK_METRICS_FLUSH_S", "") or 0.2))
# What a line's groups may take: MAX_LINE_BYTES less the marker, the envelope and the newline.
LINE_BUDGET_BYTES = protocol.MAX_LINE_BYTES - 64
# The checked path's limit for one call's values in one item: room left for a few other groups' names.
BATCH_BYTES = protocol.MAX_LINE_BYTES - 384
# What protocol.encode_columns writes, estimated from above: per item its step and time (8 bytes each in
# base64) and each value's; per group its keys, its names and each column's quotes, comma and padding.
# Exact enough that a line is encoded once; one that still comes out too long is split (_write_batch).
ITEM_OVERHEAD_BYTES = 22
VALUE_BYTES = 11  # a float64 in base64
NAME_BYTES = 3  # around each name of a group: quotes and a comma
GROUP_BYTES = 30
COLUMN_BYTES = 5

Item = tuple[int, float, dict[str, float]]  # step, time, values


class _Channel:
    """The job's metrics and event output.

    ``log_metrics``' hot path reads ``known`` and ``max_step`` and appends to ``pending`` without ``lock``:
    ``list.append`` is atomic (under the GIL, and with the list's own lock on a free-threaded build), and
    a flush takes the items it saw with one slice and deletes them with another, so an append that lands
    in between stays for the next flush. ``lock`` is for flushing, the other events and the checked path.
    The one race left is two threads logging at once: each checks its step against ``max_step``, so a
    metric logged from two threads at the same moment may send a step twice (the server keeps the
    first). Why no lock on the hot path: it was a third of the call's cost in the job."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._fd: int | None = None
        self.in_job = current().in_job
        self.local: list[dict[str, Any]] = []
        self.pending: list[Item] = []  # logged, not yet written; encoded at flush, a line at a time
        self.known: set[str] = set()  # names already checked: the hot path skips the regex
        # The highest step any metric was logged at: a step above it is after each metric's own last
        # step, so the hot path needs no per-metric check. Those per-metric steps (last_step) are brought
        # up to date from the pending items only when the checked path needs them, or at flush (settle).
        self.max_step = -1
        self.last_step: dict[str, int] = {}
        self.settled = 0  # items at the head of ``pending`` already counted in ``last_step``
        self.flusher: threading.Thread | None = None
        self.write_failed = False  # the flusher said so once on stderr

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

    def settle_locked(self, upto: int) -> None:
        items = self.pending[self.settled:upto]
        if not items:
            return
        last = items[-1]
        if len(set(map(tuple, (values for _, _, values in items)))) == 1:  # one set of names: its last step
            self.last_step.update(dict.fromkeys(last[2], last[0]))
        else:
            for step, _, values in items:
                self.last_step.update(dict.fromkeys(values, step))
        self.settled = max(self.settled, upto)

    def flush_locked(self) -> None:
        count = len(self.pending)
        if not count:
            return
        self.settle_locked(count)
        items = self.pending[:count]
        del self.pending[:count]
        self.settled -= count
        if not self.in_job:
            self.local.extend({"k": protocol.METRICS, "s": step, "t": at, "v": values} for step, at, values in items)
            return
        group_bytes: dict[tuple[str, ...], int] = {}  # per set of names: what its group adds to a line
        in_line: set[tuple[str, ...]] = set()
        start, room = 0, LINE_BUDGET_BYTES
        for index, (_, _, values) in enumerate(items):  # lines of as many items as fit
            key = tuple(values)
            size = ITEM_OVERHEAD_BYTES + VALUE_BYTES * len(key)
            if key not in in_line:
                extra = group_bytes.get(key)
                if extra is None:
                    extra = group_bytes[key] = (GROUP_BYTES + COLUMN_BYTES * (len(key) + 2)
                                                + sum(len(name) + NAME_BYTES for name in key))
                size += extra
            if size > room and index > start:
                self._write_batch(items[start:index])
                start, room = index, LINE_BUDGET_BYTES
                in_line.clear()
                size = ITEM_OVERHEAD_BYTES + VALUE_BYTES * len(key) + group_bytes[key]
            in_line.add(key)
            room -= size
        self._write_batch(items[start:])

    def _write_batch(self, batch: list[Item]) -> None:
        line = (protocol.MARKER + json.dumps(protocol.encode_columns(batch), separators=(",", ":")) + "\n").encode()
        if len(line) >= protocol.MAX_LINE_BYTES:  # the estimate was short (a step of many long names): split
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
        with self.lock:
            self.flush_locked()  # keep the order: what was logged before this event goes first
            if self.in_job:
                self._write(protocol.encode(event))
            else:
                self.local.append(event)

    def start_flusher_locked(self) -> None:
        if not self.in_job or (self.flusher is not None and self.flusher.is_alive()):
            return
        self.flusher = threading.Thread(target=self._flush_loop, name="deepdock-sdk-flush", daemon=True)
        self.flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            if self.pending:
                try:
                    self.flush()
                except Exception as error:  # the thread must outlive one bad flush: the next may go out
                    if not self.write_failed:
                        self.write_failed = True
                        print(f"deepdock: metrics not written: {error!r}", file=sys.stderr)

    def forked(self) -> _Channel:
        """The channel of a child process forked from this one (a DataLoader worker...): the parent
        writes what was pending, the child starts empty with the steps seen so far."""
        child = _Channel()
        child.in_job = self.in_job
        child.max_step = self.max_step
        child.last_step = dict(self.last_step)
        for step, _, values in self.pending:
            child.last_step.update(dict.fromkeys(values, step))
        return child


_channel = _Channel()
_now = time.time


def _after_fork_in_child() -> None:
    global _channel
    _channel = _channel.forked()  # the lock may have been held by the parent's flusher, gone in the child


def _flush_at_exit() -> None:
    _channel.flush()  # this process's channel: a forked child's own, never its parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)


def log_metrics(step: int, **metrics: Any) -> None:
    """Record ``metrics`` (name=value) at ``step``. Steps of one metric must increase.

    The hot path (names seen before, Python floats, a step above every step logged so far: a training
    loop's every call) checks each value by its type and appends the kwargs dict, as it is, to the
    pending list: no lock, no size accounting, the per-metric step bookkeeping and the encoding left to
    the flush. Why it matters: between a training step's tensor ops the call runs with cold caches, where
    it measured several times its warm cost (docs/benchmarks.md). Anything else takes the checked path,
    which validates and converts each value and each metric's own step order, raises ``TrackingError``,
    and starts the flusher."""
    channel = _channel
    known = channel.known
    for name, value in metrics.items():
        if name not in known or type(value) is not float or value - value != 0.0:  # NaN and infinities give NaN
            break
    else:
        if type(step) is int and channel.max_step < step < MAX_STEP and metrics:
            channel.max_step = step
            channel.pending.append((step, _now(), metrics))
            return
    _log_checked(step, metrics)


def _log_checked(step: Any, metrics: dict[str, Any]) -> None:
    if type(step) is not int or not 0 <= step < MAX_STEP:
        step = check_step(step)
    if not metrics:
        raise TrackingError("log_metrics needs at least one name=value")
    channel = _channel
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if name not in channel.known:
            check_name(name)
        kind = type(value)
        if kind is float and value - value == 0.0:
            values[name] = value
        elif kind is int:
            values[name] = float(value)
        else:
            values[name] = check_value(name, value)
    with channel.lock:
        channel.settle_locked(len(channel.pending))
        for name in values:
            last = channel.last_step.get(name)
            if last is not None and step <= last:
                raise TrackingError(f"metric {name!r}: step {step} is not after step {last}, the last one logged")
        channel.last_step.update(dict.fromkeys(values, step))
        channel.known.update(values)
        if step > channel.max_step:
            channel.max_step = step
        now = _now()
        names_bytes = sum(len(name) + NAME_BYTES for name in values)
        if ITEM_OVERHEAD_BYTES + VALUE_BYTES * len(values) + names_bytes <= BATCH_BYTES:
            channel.pending.append((step, now, values))
        else:  # more values than one line holds: several items of the same step
            channel.pending.extend((step, now, chunk) for chunk in _chunks(values))
        channel.start_flusher_locked()


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
    _channel.flush()
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
