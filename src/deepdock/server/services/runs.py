"""Reading what jobs tracked: one series (downsampled on request), a job's metrics and params, several
jobs side by side, a job's checkpoints. Per project, through ``get_job``'s visibility rule."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api import CheckpointOut, MetricsOut, ParamsOut, RunSummary, SeriesOut, SeriesSummary
from deepdock.api.enums import JobStatus
from deepdock.errors import NotFoundError, SpecError
from deepdock.sdk.protocol import NAME_RE
from deepdock.server.db.models import Checkpoint, JobParam, MetricLatest, MetricPoint, User
from deepdock.server.services.downsample import lttb_indices
from deepdock.server.services.jobs import get_job

MAX_COMPARE = 50
MAX_POINTS_CAP = 1_000_000


def read_series(session: Session, user: User, ref: str, name: str, *, max_points: int | None = None,
                attempt: int | None = None, rank: int | None = None, after_step: int | None = None) -> SeriesOut:
    if not NAME_RE.match(name):
        raise SpecError(f"{name!r} is not a metric name")
    if max_points is not None and not 2 <= max_points <= MAX_POINTS_CAP:
        raise SpecError(f"max_points must be between 2 and {MAX_POINTS_CAP}")
    job = get_job(session, user, ref)
    t = MetricPoint.__table__
    query = select(t.c.step, t.c.value, t.c.at, t.c.attempt, t.c.rank).where(t.c.job_id == job.id, t.c.name == name)
    if attempt is not None:
        query = query.where(t.c.attempt == attempt)
    if rank is not None:
        query = query.where(t.c.rank == rank)
    if after_step is not None:
        query = query.where(t.c.step > after_step)
    # The primary key's order: by attempt, then rank, then step (a resumed run continues its steps).
    rows = session.execute(query.order_by(t.c.attempt, t.c.rank, t.c.step)).all()
    if not rows and session.get(MetricLatest, (job.id, name)) is None:
        raise NotFoundError(f"job {job.id} has no metric {name!r}")
    steps, values, times, attempts, ranks = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
    total = len(steps)
    downsampled = max_points is not None and total > max_points
    if downsampled:
        assert max_points is not None
        keep = lttb_indices(np.arange(total), np.asarray(values), max_points)
        steps, values, times, attempts, ranks = ([column[i] for i in keep] for column in (steps, values, times, attempts, ranks))
    return SeriesOut.model_construct(job=job.id, name=name, total=total, downsampled=downsampled, steps=steps,
                                     values=values, times=times, attempts=attempts, ranks=ranks)


def job_metrics(session: Session, user: User, ref: str) -> MetricsOut:
    job = get_job(session, user, ref)
    rows = session.scalars(select(MetricLatest).where(MetricLatest.job_id == job.id).order_by(MetricLatest.name))
    return MetricsOut(job=job.id, series=[SeriesSummary(name=r.name, value=r.value, step=r.step, attempt=r.attempt,
                                                         count=r.count) for r in rows])


def job_params(session: Session, user: User, ref: str) -> ParamsOut:
    job = get_job(session, user, ref)
    rows = session.scalars(select(JobParam).where(JobParam.job_id == job.id).order_by(JobParam.name))
    return ParamsOut(job=job.id, params={r.name: r.value for r in rows})


def compare_jobs(session: Session, user: User, refs: list[str]) -> list[RunSummary]:
    if not refs or len(refs) > MAX_COMPARE:
        raise SpecError(f"compare takes 1 to {MAX_COMPARE} jobs")
    out = []
    for ref in refs:
        job = get_job(session, user, ref)
        params = {p.name: p.value for p in session.scalars(select(JobParam).where(JobParam.job_id == job.id))}
        metrics = {m.name: m.value for m in session.scalars(select(MetricLatest).where(MetricLatest.job_id == job.id))}
        out.append(RunSummary(id=job.id, name=job.name, status=JobStatus(job.status), params=params, metrics=metrics))
    return out


def list_checkpoints(session: Session, user: User, ref: str) -> list[CheckpointOut]:
    job = get_job(session, user, ref)
    rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.id))
    return [CheckpointOut(name=c.name, attempt=c.attempt, rank=c.rank, step=c.step, size=c.size, sha256=c.sha256,
                          status=c.status, created_at=c.created_at, stored_at=c.stored_at) for c in rows]
