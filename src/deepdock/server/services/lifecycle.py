"""Job states, the transitions allowed between them, and the one function that applies a transition.

Every write of job, attempt and replica rows is fenced by the row's version column (SQLAlchemy's
``version_id_col``, db/models.py): an UPDATE applies only if the row is still the version that was read,
and otherwise the flush raises ``StaleDataError``. ``fenced()`` turns that into ``StaleStateError``, which a
background step treats as "someone else moved it; read again next tick" and an API call as a 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from deepdock.api.enums import ACTIVE_JOB_STATUSES, TERMINAL_JOB_STATUSES, JobStatus
from deepdock.errors import ConflictError
from deepdock.server.db.models import Job, JobEvent, now_s

TERMINAL = TERMINAL_JOB_STATUSES
ACTIVE = ACTIVE_JOB_STATUSES

# QUEUED again after SCHEDULED/STARTING/RUNNING is a retry or a preemption: the job goes back in line.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SCHEDULED, JobStatus.STOPPED, JobStatus.FAILED}),
    JobStatus.SCHEDULED: frozenset(
        {JobStatus.STARTING, JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.STOPPED,
         JobStatus.SUCCEEDED}
    ),
    JobStatus.STARTING: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.SUCCEEDED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.STOPPED: frozenset(),
}


class StaleStateError(ConflictError):
    """Someone else changed the row since it was read; the caller re-reads and decides again."""


@contextmanager
def fenced(what: str) -> Iterator[None]:
    """Map a failed version check of a flush to ``StaleStateError`` naming what was being written."""
    try:
        yield
    except StaleDataError:
        raise StaleStateError(f"{what} changed concurrently; try again") from None


def transition(session: Session, job: Job, to: JobStatus, reason: str = "", *, attempt: int | None = None,
               at: float | None = None) -> None:
    """Move ``job`` to ``to`` and record the event, in the caller's transaction, fenced by the version."""
    previous = JobStatus(job.status)
    if to not in ALLOWED[previous]:
        raise ConflictError(f"job {job.id} cannot go from {previous} to {to}")
    at = now_s() if at is None else at
    job.status = to
    job.status_reason = reason
    job.updated_at = at
    if to == JobStatus.RUNNING and job.started_at is None:
        job.started_at = at
    if to in TERMINAL:
        job.finished_at = at
    if to != JobStatus.QUEUED:
        job.pending_reason = None
    session.add(JobEvent(job_id=job.id, attempt=attempt, from_status=previous, to_status=to, reason=reason, at=at))
    with fenced(f"job {job.id}"):
        session.flush()
