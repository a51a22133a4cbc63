"""The line protocol between code inside a job and the server: events written to the container's output.

Why the output: it is the one channel every node already gives the server for every container, with no
network, no mount and no exec (jobs run with ``network_mode=none``), and Docker keeps it after the
container exits and replays it from the start, so a server that restarts reads the same bytes again.
The server's log follower copies the output into its log store; the tracking step parses complete lines
from a byte offset it commits together with what it stored (exactly once, across restarts).

A line is ``MARKER`` + one JSON object + ``\\n``, written with a single ``write`` (atomic on a pipe below
``PIPE_BUF``), so it never interleaves with the job's own output mid-line. The marker may follow a
partial line the job printed without a newline: the parser looks for it anywhere in the line.

Standard library only: this module is copied into every job container (see ``deepdock.sdk``).
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

MARKER = "\x1e@deepdock "
MARKER_BYTES = MARKER.encode()
# Below PIPE_BUF (4096 on Linux), so one write is one atomic line; larger events are split by the SDK.
MAX_LINE_BYTES = 4000
PROTOCOL_VERSION = 1

# Kinds of event.
METRICS = "m"      # {"k": "m", "s": step, "t": epoch_s, "v": {name: value}}
BATCH = "b"        # {"k": "b", "e": [metrics event without "k", ...]}: many steps in one line (read, no longer written)
COLUMNS = "a"      # {"k": "a", "g": [{"n": [names], "s": steps, "t": times, "v": [values per name]}]}: many steps
                   # in one line, each column little-endian int64 or float64, base64 (encode_columns)
PARAMS = "p"       # {"k": "p", "v": {name: json value}}
CHECKPOINT = "c"   # {"k": "c", "name": file name, "s": step, "sha256": hex, "size": bytes}
MODEL = "r"        # {"k": "r", "name": model name, "dir": folder under the artifacts dir, "signature": {...}}
DATA = "d"         # {"k": "d", "target": mount, "sha256": tree hash, "files", "bytes", "hashed_bytes", "complete"}
KINDS = frozenset({METRICS, BATCH, COLUMNS, PARAMS, CHECKPOINT, MODEL, DATA})

# MLflow's metric-name alphabet without spaces: letters, digits, '_', '-', '.', '/'.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,127}$")
MAX_PARAM_VALUE_CHARS = 1000
MAX_STEP = 2**62


class TrackingError(ValueError):
    """A bad SDK call (a name that is not a metric name, a value that is not a finite number, ...)."""


def check_name(name: object, what: str = "metric") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TrackingError(f"{what} name {name!r} is not valid: 1-128 characters of letters, digits, '_', '-', '.', "
                            "'/', not starting with a punctuation mark")
    return name


def check_value(name: str, value: object) -> float:
    # bool is an int subclass: True as a metric is almost always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # numpy and torch scalars: anything with .item() that gives a number
        item = getattr(value, "item", None)
        if callable(item):
            try:
                value = item()
            except (TypeError, ValueError, RuntimeError):
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrackingError(f"metric {name!r}: value {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise TrackingError(f"metric {name!r}: value {number} is not finite (NaN or infinity)")
    return number


def check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        item = getattr(step, "item", None)
        step = item() if callable(item) else step
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < MAX_STEP:
        raise TrackingError(f"step {step!r} is not a non-negative integer")
    return step


def check_param(name: str, value: object) -> Any:
    check_name(name, "param")
    if value is None or isinstance(value, (bool, int, str)):
        out: Any = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TrackingError(f"param {name!r}: value {value} is not finite")
        out = value
    else:
        out = str(value)  # a tuple, a path, an enum: recorded as text, as MLflow does
    if len(json.dumps(out)) > MAX_PARAM_VALUE_CHARS:
        raise TrackingError(f"param {name!r}: value longer than {MAX_PARAM_VALUE_CHARS} characters")
    return out


_SWAP = sys.byteorder != "little"


def _column(values: array) -> str:  # type: ignore[type-arg]
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return base64.b64encode(values).decode("ascii")


def _uncolumn(typecode: str, text: object) -> array:  # type: ignore[type-arg]
    if not isinstance(text, str):
        raise ValueError("a column is not text")
    values = array(typecode, base64.b64decode(text, validate=True))
    if _SWAP:
        values.byteswap()
    return values


def encode_columns(batch: Iterable[tuple[int, float, dict[str, float]]]) -> dict[str, Any]:
    """Metrics items (step, time, {name: float}) as one COLUMNS event: the items with the same names form a
    group whose steps, times and each metric's values are packed arrays. Why not a JSON object per item:
    ``repr`` of every float made the encoding the SDK's largest cost inside a training step (~1.9 µs an
    item against ~0.9 here) and its lines a third longer."""
    batch = list(batch)
    if not batch:
        return {"k": COLUMNS, "g": []}
    steps_, times_, dicts = zip(*batch, strict=True)
    names = set(map(tuple, dicts))
    if len(names) == 1:  # a training loop's usual batch: every step the same names, columns in C (zip, map)
        (key,) = names
        return {"k": COLUMNS, "g": [{"n": list(key), "s": _column(array("q", steps_)), "t": _column(array("d", times_)),
                                     "v": [_column(array("d", c)) for c in zip(*map(dict.values, dicts), strict=True)]}]}
    groups: dict[tuple[str, ...], tuple[array, array, list[array]]] = {}  # type: ignore[type-arg]
    for step, at, values in batch:
        key = tuple(values)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (array("q"), array("d"), [array("d") for _ in key])
        group[0].append(step)
        group[1].append(at)
        for column, value in zip(group[2], values.values(), strict=True):
            column.append(value)
    return {"k": COLUMNS, "g": [{"n": list(key), "s": _column(steps), "t": _column(times),
                                 "v": [_column(c) for c in columns]}
                                for key, (steps, times, columns) in groups.items()]}


def decode_columns(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The metrics events (without "k") of a COLUMNS event; ``ValueError`` (or ``TypeError``) if malformed."""
    for group in event["g"]:
        names = group["n"]
        steps, times = _uncolumn("q", group["s"]), _uncolumn("d", group["t"])
        columns = [_uncolumn("d", c) for c in group["v"]]
        if not isinstance(names, list) or len(columns) != len(names) or len(times) != len(steps) \
                or any(len(c) != len(steps) for c in columns):
            raise ValueError("the columns of a group disagree")
        for i, step in enumerate(steps):
            yield {"s": step, "t": times[i], "v": {name: column[i] for name, column in zip(names, columns, strict=True)}}


def encode(event: dict[str, Any]) -> bytes:
    return (MARKER + json.dumps(event, separators=(",", ":"), allow_nan=False) + "\n").encode()


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The event on ``line`` (bytes without the newline), or None when it carries none or a broken one.

    A broken event can only come from a job writing the marker itself; it is skipped, not fatal."""
    at = line.find(MARKER_BYTES)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(MARKER_BYTES):])
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("k") not in KINDS:
        return None
    return event


def strip_events(data: bytes) -> bytes:
    """The job's own output: ``data`` (whole lines) without the event lines (what ``deepdock logs`` shows)."""
    if MARKER_BYTES not in data:
        return data
    out = []
    for line in data.splitlines(keepends=True):
        at = line.find(MARKER_BYTES)
        if at < 0:
            out.append(line)
        elif at > 0:
            out.append(line[:at] + b"\n")  # the job's partial line before the event
    return b"".join(out)
