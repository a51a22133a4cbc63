"""Job states, the transitions allowed between them, and the one function that applies a transition."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from deepdock.errors import ConflictError
from deepdock.server.db.models import Job, JobEvent, now_s

QUEUED = "QUEUED"
SCHEDULED = "SCHEDULED"
STARTING = "STARTING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STOPPED = "STOPPED"

TERMINAL = frozenset({SUCCEEDED, FAILED, STOPPED})
ACTIVE = frozenset({SCHEDULED, STARTING, RUNNING})
ALL_STATES = (QUEUED, SCHEDULED, STARTING, RUNNING, SUCCEEDED, FAILED, STOPPED)

# QUEUED again after SCHEDULED/STARTING/RUNNING is a retry or a preemption: the job goes back in line.
ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({SCHEDULED, STOPPED, FAILED}),
    SCHEDULED: frozenset({STARTING, RUNNING, QUEUED, FAILED, STOPPED}),
    STARTING: frozenset({RUNNING, QUEUED, FAILED, STOPPED, SUCCEEDED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, STOPPED, QUEUED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    STOPPED: frozenset(),
}

# Reasons a job failed, as `describe` shows them (the part before ':' is machine-readable).
REASON_EXIT_CODE = "exit_code"
REASON_OOM = "oom_killed"
REASON_NODE_LOST = "node_lost"
REASON_IMAGE_MISSING = "image_missing"
REASON_RUNTIME_EXCEEDED = "runtime_exceeded"
REASON_START_FAILED = "start_failed"
REASON_CONTAINER_LOST = "container_lost"


class StaleJobError(ConflictError):
    """Someone else changed the job since it was read; the caller re-reads and decides again."""


def transition(session: Session, job: Job, to: str, reason: str = "", *, attempt: int | None = None) -> None:
    """Move ``job`` to ``to``, fenced by its version, and record the event in the same transaction."""
    if to not in ALLOWED[job.status]:
        raise ConflictError(f"job {job.id} cannot go from {job.status} to {to}")
    at = now_s()
    values: dict[str, object] = {"status": to, "status_reason": reason, "version": job.version + 1, "updated_at": at}
    if to == RUNNING and job.started_at is None:
        values["started_at"] = at
    if to in TERMINAL:
        values["finished_at"] = at
    if to != QUEUED:
        values["pending_reason"] = None
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.version == job.version).values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleJobError(f"job {job.id} changed concurrently")
    session.add(JobEvent(job_id=job.id, attempt=attempt, from_status=job.status, to_status=to, reason=reason, at=at))
    # Keep the in-memory object equal to the row without another SELECT or a second UPDATE.
    for key, value in values.items():
        set_committed_value(job, key, value)
    session.flush()
