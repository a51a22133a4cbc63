"""What happens to a job when one of its attempts ends: success, failure, stop, preemption, retry."""

from __future__ import annotations

from sqlalchemy.orm import Session

from deepdock.scheduler.types import Resources, service_rate
from deepdock.server.db.models import Attempt, Job, now_s
from deepdock.server.services import lifecycle

OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED = "failed"
OUTCOME_STOPPED = "stopped"
OUTCOME_PREEMPTED = "preempted"

# Which retry-policy class each failure reason belongs to (RetrySpec.on).
RETRY_CLASS = {
    lifecycle.REASON_EXIT_CODE: "failed",
    lifecycle.REASON_START_FAILED: "failed",
    lifecycle.REASON_CONTAINER_LOST: "node_lost",
    lifecycle.REASON_NODE_LOST: "node_lost",
    lifecycle.REASON_OOM: "oom",
}


def attained_service(job: Job, attempt: Attempt, end: float) -> float:
    """GPU-seconds (see scheduler.types.service_rate): the 2D-LAS scheduler's measure of service."""
    if attempt.started_at is None:
        return 0.0
    rate = service_rate(Resources(cpus=job.cpus, memory=job.memory, gpus=job.gpus), job.replicas)
    return max(0.0, end - attempt.started_at) * rate


def finish_attempt(session: Session, job: Job, attempt: Attempt, outcome: str, reason: str, *, code: str = "") -> None:
    """Release the attempt's resources and move the job on. ``code`` is the machine-readable failure class."""
    end = now_s()
    attempt.status = outcome.upper()
    attempt.reason = reason
    attempt.finished_at = end
    for replica in attempt.replicas:
        replica.active = False
        if replica.finished_at is None:
            replica.finished_at = end
    job.attained_service = (job.attained_service or 0.0) + attained_service(job, attempt, end)
    stop = job.stop_requested
    job.stop_requested = None
    # A requested stop decides the outcome whatever the exit code: a job that catches SIGTERM and
    # exits 0 after checkpointing was still stopped (or preempted), not finished.
    if outcome == OUTCOME_STOPPED or stop == "user":
        lifecycle.transition(session, job, lifecycle.STOPPED, reason or "stopped by user", attempt=attempt.number)
    elif outcome == OUTCOME_PREEMPTED or stop == "preempted":
        lifecycle.transition(session, job, lifecycle.QUEUED, f"preempted: {reason}", attempt=attempt.number)
    elif stop == "runtime":
        lifecycle.transition(
            session, job, lifecycle.FAILED, f"{lifecycle.REASON_RUNTIME_EXCEEDED}: {reason}", attempt=attempt.number
        )
    elif outcome == OUTCOME_SUCCEEDED:
        lifecycle.transition(session, job, lifecycle.SUCCEEDED, reason, attempt=attempt.number)
    else:
        retry_on = set((job.spec.get("retry") or {}).get("on") or [])
        if RETRY_CLASS.get(code) in retry_on and job.retries_left > 0:
            job.retries_left -= 1
            lifecycle.transition(
                session, job, lifecycle.QUEUED, f"retrying after {code}: {reason}", attempt=attempt.number
            )
        else:
            lifecycle.transition(session, job, lifecycle.FAILED, f"{code}: {reason}", attempt=attempt.number)
    session.flush()
