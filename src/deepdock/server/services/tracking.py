"""Tracking: the events a job writes to its output (sdk/protocol.py) become metric series, params and
checkpoint records; and the reads of them (series downsampled for charts, params, final metrics).

Ingest reads a replica's log file (the follower keeps it, services/logs.py) from the committed cursor
to its last complete line, and writes the points, params, checkpoints and the new cursor in ONE
transaction: a server killed at any moment either stored a line's points and moved past it, or did
neither, so a restart re-reads exactly what was not stored. The follower rewrites a log from the
start after a restart (Docker replays it byte for byte), so a cursor stays valid; while the rewrite is
shorter than the cursor, ingest waits. Series are stored in chunks (services/series.py) that drop a
step not after the last one stored, so a duplicate is impossible even so.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from deepdock.api.enums import CheckpointStatus
from deepdock.sdk import protocol
from deepdock.server.db.models import Checkpoint, DataRead, JobParam, MetricLatest, TrackingCursor
from deepdock.server.db.session import Database
from deepdock.server.services.series import append_series

# What the SDK names a checkpoint (sdk/checkpoints.py CHECKPOINT_RE); an event naming anything else is a
# forgery, which must not make the server copy some other path of the container.
CHECKPOINT_NAME_RE = re.compile(r"^ckpt-\d{12}\.(pt|pkl)$")
# One ingest reads at most this much of a log: a burst is stored over a few ticks, each transaction short.
MAX_INGEST_BYTES = 8 * 1024 * 1024


@dataclass
class Ingested:
    points: int = 0
    params: int = 0
    checkpoints: int = 0
    models: list[dict[str, Any]] = field(default_factory=list)
    at_end: bool = True  # the whole file (to its last complete line) has been read


def _insert(session: Session, table: Any) -> Any:
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


def read_cursor(session: Session, job_id: str, attempt: int, rank: int) -> int:
    cursor = session.get(TrackingCursor, (job_id, attempt, rank))
    return cursor.offset if cursor is not None else 0


def ingest_log(db: Database, path: Path, job_id: str, attempt: int, rank: int, *, known_offset: int | None = None,
               max_bytes: int = MAX_INGEST_BYTES) -> tuple[Ingested, int]:
    """Store the events of ``path`` past the cursor; returns what was stored and the new cursor.

    ``known_offset`` is the caller's cached cursor: when the file has not grown past it, the step
    returns without a database round trip (the tracking loop runs several times a second)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Ingested(), known_offset or 0
    if known_offset is not None and size <= known_offset:
        return Ingested(), known_offset
    with db.session() as session:
        offset = read_cursor(session, job_id, attempt, rank)
        if size <= offset:
            return Ingested(), offset  # not written yet, or being rewritten after a restart
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(max_bytes)
        # Read to the end of the file: what is left after the last newline is a line still being written.
        read_to_end = len(data) < max_bytes
        end = data.rfind(b"\n")
        if end < 0:
            return Ingested(at_end=read_to_end), offset
        data = data[: end + 1]
        result = store_events(session, job_id, attempt, rank, _events(data))
        result.at_end = read_to_end
        new_offset = offset + len(data)
        _insert_cursor(session, job_id, attempt, rank, new_offset)
    return result, new_offset


def _events(data: bytes) -> Iterable[dict[str, Any]]:
    if protocol.MARKER_BYTES not in data:
        return
    for line in data.split(b"\n"):
        event = protocol.decode_line(line)
        if event is not None:
            yield event


def _insert_cursor(session: Session, job_id: str, attempt: int, rank: int, offset: int) -> None:
    stmt = _insert(session, TrackingCursor).values(job_id=job_id, attempt=attempt, rank=rank, offset=offset)
    session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "attempt", "rank"], set_={"offset": offset}))


def store_events(session: Session, job_id: str, attempt: int, rank: int, events: Iterable[dict[str, Any]]) -> Ingested:
    """Write one batch of events in the caller's transaction."""
    result = Ingested()
    series: dict[str, list[tuple[int, float, float]]] = {}
    params: dict[str, Any] = {}
    checkpoints: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    for event in _unbatched(events):
        kind = event["k"]
        try:
            if kind == protocol.METRICS:
                step, at = int(event["s"]), float(event["t"])
                for name, value in event["v"].items():
                    number = float(value)
                    if isinstance(name, str) and protocol.NAME_RE.match(name) and math.isfinite(number):
                        series.setdefault(name, []).append((step, number, at))
            elif kind == protocol.PARAMS:
                params.update(event["v"])
            elif kind == protocol.CHECKPOINT:
                if not CHECKPOINT_NAME_RE.match(str(event["name"])):
                    continue  # only the SDK's own file names: nothing outside the checkpoint folder
                checkpoints.append({"job_id": job_id, "attempt": attempt, "rank": rank, "name": str(event["name"])[:64],
                                    "step": int(event["s"]), "sha256": str(event["sha256"])[:64],
                                    "size": int(event["size"]), "status": CheckpointStatus.PENDING, "error": "",
                                    "created_at": float(event.get("t") or 0) or time.time()})
            elif kind == protocol.MODEL:
                result.models.append(event)
            elif kind == protocol.DATA:
                data.append({"job_id": job_id, "attempt": attempt, "target": str(event["target"])[:4096],
                             "sha256": str(event["sha256"])[:64], "files": int(event["files"]),
                             "bytes": int(event["bytes"]), "hashed_bytes": int(event["hashed_bytes"]),
                             "complete": bool(event["complete"])})
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            continue  # a line the job forged by hand; the SDK never writes one
    latest = []
    for name, logged in series.items():
        kept = append_series(session, job_id, attempt, rank, name, logged)
        if kept:
            step, value, at = kept[-1]
            latest.append({"job_id": job_id, "name": name, "attempt": attempt, "rank": rank, "step": step, "value": value,
                           "at": at, "count": len(kept)})
            result.points += len(kept)
    if latest:
        session.flush()
        _update_latest(session, latest)
    for name, value in params.items():
        stmt = _insert(session, JobParam).values(job_id=job_id, name=str(name)[:128], value=value, attempt=attempt)
        session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "name"], set_={"value": value, "attempt": attempt}))
        result.params += 1
    if checkpoints:
        session.execute(_insert(session, Checkpoint).on_conflict_do_nothing(), checkpoints)
        result.checkpoints = len(checkpoints)
    if data:
        # Every rank of a gang hashes the same mounts: the first answer stands.
        session.execute(_insert(session, DataRead).on_conflict_do_nothing(), data)
    return result


def _unbatched(events: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for event in events:
        if event["k"] == protocol.BATCH:
            items = event.get("e")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    yield {**item, "k": protocol.METRICS}
        elif event["k"] == protocol.COLUMNS:
            try:
                decoded = list(protocol.decode_columns(event))
            except (KeyError, TypeError, ValueError):
                continue  # a line the job forged by hand; the SDK never writes one
            for item in decoded:
                item["k"] = protocol.METRICS
                yield item
        else:
            yield event


def _update_latest(session: Session, rows: list[dict[str, Any]]) -> None:
    """Each series' last point (a newer attempt's, or a later step of the same) and its point count."""
    table = MetricLatest.__table__
    stmt = _insert(session, MetricLatest)
    ex = stmt.excluded
    newer = or_(table.c.attempt < ex.attempt, and_(table.c.attempt == ex.attempt, table.c.step <= ex.step))
    set_ = {col: case((newer, ex[col]), else_=table.c[col]) for col in ("attempt", "rank", "step", "value", "at")}
    set_["count"] = table.c["count"] + ex["count"]
    session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "name"], set_=set_), rows)



def model_events(path: Path) -> list[dict[str, Any]]:
    """Every model registration a replica's whole log carries (read once, when its attempt is collected)."""
    if not path.exists():
        return []
    return [e for e in _events(path.read_bytes()) if e["k"] == protocol.MODEL]


def pending_checkpoints(session: Session, job_id: str, attempt: int, rank: int) -> list[Checkpoint]:
    return list(session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.attempt == attempt, Checkpoint.rank == rank,
                                 Checkpoint.status == CheckpointStatus.PENDING).order_by(Checkpoint.step)
    ))
