"""What happens to a job when one of its attempts ends: success, failure, stop, preemption, retry.

Which wins when a stop request meets an exit: the server's signal decides only if it was sent. A
container that exited 0 before any SIGTERM reached it finished on its own, so a preemption (or a user's
stop) that arrives as it ends does not run the job again or call it stopped. Replicas the server
signalled are left out when the others' own exits are judged (a gang stop ends them with 143).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from deepdock.api.enums import AttemptStatus, FailureReason, JobStatus, ReplicaStatus, StopRequest
from deepdock.scheduler.types import Resources, gpu_time_rate
from deepdock.server.db.models import Attempt, Job, Replica, now_s
from deepdock.server.services.lifecycle import fenced, transition

# Which retry-policy class (RetrySpec.on) each failure belongs to; a failure not listed is never retried.
RETRY_CLASS: dict[FailureReason, str] = {
    FailureReason.EXIT_CODE: "failed",
    FailureReason.START_FAILED: "failed",
    FailureReason.CONTAINER_LOST: "node_lost",
    FailureReason.NODE_LOST: "node_lost",
    FailureReason.OOM_KILLED: "oom",
    FailureReason.NO_PROGRESS: "failed",
    FailureReason.UNHEALTHY: "failed",
}
# Stop requests that decide the outcome once the server has signalled the containers.
DECIDING_STOPS = frozenset({StopRequest.USER, StopRequest.PREEMPTED, StopRequest.RUNTIME, StopRequest.STALLED,
                            StopRequest.UNHEALTHY})
# Stops of a job that cannot go on as it is: failed, and retried by its retry policy.
_FAILING_STOPS = {StopRequest.STALLED: FailureReason.NO_PROGRESS, StopRequest.UNHEALTHY: FailureReason.UNHEALTHY}


@dataclass(frozen=True)
class Backoff:
    """How long a retried job waits before its next attempt: ``base_s`` after the first failure, doubling
    after each one, at most ``max_s`` (Kubernetes' CrashLoopBackOff: 10 s doubling to 5 min), so a job
    that fails at once is not placed again and again in a tight loop."""

    base_s: float = 10.0
    max_s: float = 300.0

    def delay_s(self, failures: int) -> float:
        return min(self.max_s, self.base_s * 2 ** max(0, failures - 1))


DEFAULT_BACKOFF = Backoff()
# For a node's loss: the job did nothing wrong, and another node can take it now.
NO_BACKOFF = Backoff(0.0, 0.0)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``requeue``: nothing of the job ran (its node could not be reached at
    start), so it goes back in line without using a retry."""

    status: AttemptStatus
    reason: str
    failure: FailureReason | None = None
    requeue: bool = False


SUCCEEDED = Outcome(AttemptStatus.SUCCEEDED, "exit code 0")
# Every container ended on the server's signal: the stop request that sent it decides (finish_attempt).
SIGNALLED = Outcome(AttemptStatus.STOPPED, "ended by the server's stop signal")


def observed_outcome(attempt: Attempt) -> Outcome:
    """The outcome of an attempt whose replicas have all ended, from the replicas that ended on their own.

    In a gang the first rank to fail is the cause (the others were stopped because of it, or failed in a
    collective after it): its rank, node and why are the reason. Ranks seen ended in the same tick are
    all unsignalled; among them a vanished container or an OOM kill is the cause before an exit code (a
    peer's connection reset follows it), and exits are ordered by the engines' own times."""

    def cause_first(r: Replica) -> tuple[int, float, int]:
        kind = 0 if r.status == ReplicaStatus.LOST else 1 if r.oom_killed else 2
        return kind, r.finished_at if r.finished_at is not None else float("inf"), r.rank

    own = sorted((r for r in attempt.replicas if r.stop_sent_at is None), key=cause_first)
    if not own:
        # Every container was signalled: their 143 (or 137 after the grace) is the stop's doing, not a
        # failure of the job, unless all of them finished cleanly on the signal.
        return SUCCEEDED if all(r.exit_code == 0 for r in attempt.replicas) else SIGNALLED
    for replica in own:
        where = f"replica {replica.rank} on node {replica.node_name}"
        if replica.status == ReplicaStatus.LOST:
            return Outcome(AttemptStatus.FAILED, f"container of {where} disappeared", FailureReason.CONTAINER_LOST)
        if replica.oom_killed:
            return Outcome(AttemptStatus.FAILED, f"{where} exceeded its memory limit (OOMKilled)",
                           FailureReason.OOM_KILLED)
        if replica.exit_code not in (0, None):
            return Outcome(AttemptStatus.FAILED, f"{where} exited with code {replica.exit_code}",
                           FailureReason.EXIT_CODE)
    return SUCCEEDED


def _signalled(replicas: list[Replica]) -> bool:
    """Whether the stop reached the attempt: a container was signalled, or none was ever started."""
    return any(r.stop_sent_at is not None for r in replicas) or all(r.container_id is None for r in replicas)


def attempt_gpu_s(job: Job, attempt: Attempt, end: float) -> float:
    """GPU-seconds (see scheduler.types.gpu_time_rate): the 2D-LAS scheduler's measure of attained time."""
    if attempt.started_at is None:
        return 0.0
    rate = gpu_time_rate(Resources(cpus=job.cpus, memory=job.memory, gpus=job.gpus), job.replicas)
    return max(0.0, end - attempt.started_at) * rate


def finish_attempt(session: Session, job: Job, attempt: Attempt, outcome: Outcome, *, now: float | None = None,
                   backoff: Backoff = DEFAULT_BACKOFF) -> None:
    """Release the attempt's resources and move the job on, in the caller's (fenced) transaction.

    Every terminal path of an attempt comes here, so every one of them frees its replicas."""
    end = now_s() if now is None else now
    stop = StopRequest(job.stop_requested) if job.stop_requested else None
    by_stop = stop in DECIDING_STOPS and (outcome.status != AttemptStatus.SUCCEEDED or _signalled(attempt.replicas))
    attempt.reason = outcome.reason
    attempt.finished_at = end
    for replica in attempt.replicas:
        replica.active = False
        if replica.finished_at is None:
            replica.finished_at = end
    job.attained_gpu_s = (job.attained_gpu_s or 0.0) + attempt_gpu_s(job, attempt, end)
    job.stop_requested = None
    number = attempt.number
    if by_stop and stop == StopRequest.USER:
        attempt.status = AttemptStatus.STOPPED
        transition(session, job, JobStatus.STOPPED, outcome.reason if outcome.failure else "stopped by user",
                   attempt=number, at=end)
    elif by_stop and stop == StopRequest.PREEMPTED:
        attempt.status = AttemptStatus.PREEMPTED
        # The scheduler wrote why ("preempted for JOB: ...") when it asked for the stop.
        reason = job.status_reason if job.status_reason.startswith("preempted") else "preempted"
        transition(session, job, JobStatus.QUEUED, reason, attempt=number, at=end)
    elif by_stop and stop in _FAILING_STOPS:
        failure = _FAILING_STOPS[stop]
        attempt.status = AttemptStatus.FAILED
        attempt.reason = f"{failure}: {job.status_reason}"
        _fail_or_retry(session, job, Outcome(AttemptStatus.FAILED, job.status_reason, failure), number, end, backoff)
    elif by_stop and stop == StopRequest.RUNTIME:
        attempt.status = AttemptStatus.FAILED
        transition(session, job, JobStatus.FAILED, f"{FailureReason.RUNTIME_EXCEEDED}: {job.status_reason}",
                   attempt=number, at=end)
    elif outcome.status == AttemptStatus.SUCCEEDED:
        attempt.status = AttemptStatus.SUCCEEDED
        transition(session, job, JobStatus.SUCCEEDED, outcome.reason, attempt=number, at=end)
    elif outcome.requeue:
        attempt.status = AttemptStatus.FAILED
        transition(session, job, JobStatus.QUEUED, f"back in the queue: {outcome.reason}", attempt=number, at=end)
    else:
        attempt.status = AttemptStatus.FAILED
        _fail_or_retry(session, job, outcome, number, end, backoff)
    with fenced(f"attempt {attempt.id} of job {job.id}"):
        session.flush()


def _fail_or_retry(session: Session, job: Job, outcome: Outcome, number: int, end: float, backoff: Backoff) -> None:
    from deepdock.server.services.jobs import job_spec

    failure = outcome.failure or FailureReason.START_FAILED
    retry = job_spec(job).retry
    if RETRY_CLASS.get(failure) in set(retry.on) and job.retries_left > 0:
        job.retries_left -= 1
        failures = retry.max_retries - job.retries_left
        delay = backoff.delay_s(failures)
        if delay > 0:
            job.retry_at = end + delay
            # The scheduler leaves a backing-off job out of its queue, so this reason stands until then.
            job.pending_reason = {
                "code": "backoff",
                "message": f"retry {failures} of {retry.max_retries} after {failure}: waiting {delay:g}s",
                "position": 0,
                "details": {"retry_at": job.retry_at, "delay_s": delay, "failures": failures},
            }
        transition(session, job, JobStatus.QUEUED, f"retrying after {failure}: {outcome.reason}", attempt=number, at=end)
    else:
        transition(session, job, JobStatus.FAILED, f"{failure}: {outcome.reason}", attempt=number, at=end)
