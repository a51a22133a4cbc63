"""Metric series stored as chunks (db/models.py ``MetricChunk``): appending what ingest parsed, and reading
a series back as numpy columns.

Append: per series, the last chunk is filled up to ``CHUNK_POINTS`` and a new one begun; a step not after
the series' last stored step is dropped (the SDK never sends one; a forged or replayed line might), which
with the ingest cursor makes every point stored exactly once. Read: the chunks in (attempt, rank, seq)
order, concatenated with ``np.frombuffer``: 100,000 points in a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.server.db.models import MetricChunk

CHUNK_POINTS = 1024
STEP_DTYPE = np.dtype("<i8")
VALUE_DTYPE = np.dtype("<f8")

Point = tuple[int, float, float]  # step, value, time


@dataclass
class Columns:
    steps: np.ndarray
    values: np.ndarray
    times: np.ndarray
    attempts: np.ndarray
    ranks: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, index: np.ndarray) -> Columns:
        return Columns(self.steps[index], self.values[index], self.times[index], self.attempts[index], self.ranks[index])


def _pack(points: list[Point]) -> tuple[bytes, bytes, bytes]:
    steps, values, times = zip(*points, strict=True)
    return (np.asarray(steps, STEP_DTYPE).tobytes(), np.asarray(values, VALUE_DTYPE).tobytes(),
            np.asarray(times, VALUE_DTYPE).tobytes())


def append_series(session: Session, job_id: str, attempt: int, rank: int, name: str, points: Iterable[Point]) -> list[Point]:
    """Append ``points`` (in the order logged) to the series; returns the points kept."""
    head = session.scalars(
        select(MetricChunk).where(MetricChunk.job_id == job_id, MetricChunk.name == name, MetricChunk.attempt == attempt,
                                  MetricChunk.rank == rank).order_by(MetricChunk.seq.desc()).limit(1)
    ).first()
    last = head.last_step if head is not None else -1
    kept: list[Point] = []
    for point in points:
        if point[0] > last:
            kept.append(point)
            last = point[0]
    rest = kept
    while rest:
        if head is None or head.count >= CHUNK_POINTS:
            take, rest = rest[:CHUNK_POINTS], rest[CHUNK_POINTS:]
            steps, values, times = _pack(take)
            head = MetricChunk(job_id=job_id, name=name, attempt=attempt, rank=rank,
                               seq=0 if head is None else head.seq + 1, count=len(take), first_step=take[0][0],
                               last_step=take[-1][0], steps=steps, values=values, times=times)
            session.add(head)
        else:
            room = CHUNK_POINTS - head.count
            take, rest = rest[:room], rest[room:]
            steps, values, times = _pack(take)
            head.steps, head.values, head.times = head.steps + steps, head.values + values, head.times + times
            head.count += len(take)
            head.last_step = take[-1][0]
    return kept


def read_columns(session: Session, job_id: str, name: str, *, attempt: int | None = None, rank: int | None = None,
                 after_step: int | None = None) -> Columns:
    c = MetricChunk.__table__.c
    query = select(c.attempt, c.rank, c.count, c.steps, c["values"], c.times).where(c.job_id == job_id, c.name == name)
    if attempt is not None:
        query = query.where(c.attempt == attempt)
    if rank is not None:
        query = query.where(c.rank == rank)
    if after_step is not None:
        query = query.where(c.last_step > after_step)
    # Unpacked by position: a Row's ``count`` and ``index`` are also tuple methods.
    rows = [tuple(row) for row in session.execute(query.order_by(c.attempt, c.rank, c.seq))]
    counts = [int(r[2]) for r in rows]
    columns = Columns(
        steps=np.frombuffer(b"".join(r[3] for r in rows), STEP_DTYPE),
        values=np.frombuffer(b"".join(r[4] for r in rows), VALUE_DTYPE),
        times=np.frombuffer(b"".join(r[5] for r in rows), VALUE_DTYPE),
        attempts=np.repeat(np.asarray([r[0] for r in rows], np.int64), counts),
        ranks=np.repeat(np.asarray([r[1] for r in rows], np.int64), counts),
    )
    if after_step is not None:
        columns = columns.take(np.nonzero(columns.steps > after_step)[0])
    return columns


def count_points(session: Session, job_id: str) -> int:
    from sqlalchemy import func

    total = session.scalar(select(func.coalesce(func.sum(MetricChunk.count), 0)).where(MetricChunk.job_id == job_id))
    return int(total or 0)
