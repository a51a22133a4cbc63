"""Reading what jobs tracked: one series (downsampled on request), a job's metrics and params, several
jobs side by side, a job's checkpoints. Per project, through ``get_job``'s visibility rule."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api import CheckpointOut, MetricsOut, ParamsOut, RunSummary, SeriesSummary
from deepdock.api.enums import JobStatus
from deepdock.errors import NotFoundError, SpecError
from deepdock.sdk.protocol import NAME_RE
from deepdock.server.db.models import Checkpoint, JobParam, MetricLatest, User
from deepdock.server.services.downsample import lttb_indices
from deepdock.server.services.jobs import get_job
from deepdock.server.services.series import read_columns

MAX_COMPARE = 50
MAX_POINTS_CAP = 1_000_000


def check_max_points(max_points: int | None) -> None:
    """A downsampling bound a reader may ask for (metric series, GPU series)."""
    if max_points is not None and not 2 <= max_points <= MAX_POINTS_CAP:
        raise SpecError(f"max_points must be between 2 and {MAX_POINTS_CAP}")


def read_series(session: Session, user: User, ref: str, name: str, *, max_points: int | None = None,
                attempt: int | None = None, rank: int | None = None, after_step: int | None = None) -> dict[str, object]:
    """One series as columns (numpy arrays: the router encodes them with orjson), LTTB-downsampled to
    ``max_points`` when it has more. The shape of ``SeriesOut``."""
    if not NAME_RE.match(name):
        raise SpecError(f"{name!r} is not a metric name")
    check_max_points(max_points)
    job = get_job(session, user, ref)
    columns = read_columns(session, job.id, name, attempt=attempt, rank=rank, after_step=after_step)
    if not len(columns) and session.get(MetricLatest, (job.id, name)) is None:
        raise NotFoundError(f"job {job.id} has no metric {name!r}")
    total = len(columns)
    downsampled = max_points is not None and total > max_points
    if downsampled:
        assert max_points is not None
        columns = columns.take(lttb_indices(np.arange(total), columns.values, max_points))
    return {"job": job.id, "name": name, "total": total, "downsampled": downsampled, "steps": columns.steps,
            "values": columns.values, "times": columns.times, "attempts": columns.attempts, "ranks": columns.ranks}


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
