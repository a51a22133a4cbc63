"""services/attempts.py: the outcome of an ended attempt, and what finish_attempt makes of it for the job —
which wins when a stop request meets an exit, retries, requeues, and the resources always released."""

from __future__ import annotations

import pytest

from deepdock.api.enums import AttemptStatus, FailureReason, JobStatus, ReplicaStatus, StopRequest
from deepdock.server.services.attempts import (
    SIGNALLED,
    SUCCEEDED,
    Outcome,
    attempt_gpu_s,
    finish_attempt,
    observed_outcome,
)
from deepdock.server.services.nodes import allocations
from tests.server.factories import make_attempt, make_job

E, L = ReplicaStatus.EXITED, ReplicaStatus.LOST


def ended(session, codes: list[int | None], *, statuses=None, signalled: list[bool] | None = None,
          oom: list[bool] | None = None, stop: StopRequest | None = None, **spec):
    """A RUNNING job and its attempt whose replicas ended with ``codes`` (None: lost)."""
    n = len(codes)
    job = make_job(session, status=JobStatus.RUNNING, stop_requested=stop, replicas=n, started_at=0.0, **spec)
    attempt = make_attempt(session, job, [f"n{i}" for i in range(n)], container_ids=[f"c{i}" for i in range(n)],
                           replica_status=statuses or [L if c is None else E for c in codes], exit_codes=codes,
                           started_at=0.0)
    for replica, sent in zip(attempt.replicas, signalled or [False] * n, strict=True):
        replica.stop_sent_at = 5.0 if sent else None
    for replica, killed in zip(attempt.replicas, oom or [False] * n, strict=True):
        replica.oom_killed = killed
    session.flush()
    return job, attempt


@pytest.mark.parametrize(("codes", "oom", "signalled", "expected"), [
    ([0], None, None, SUCCEEDED),
    ([0, 0], None, None, SUCCEEDED),
    ([3], None, None, Outcome(AttemptStatus.FAILED, "replica 0 on node n0 exited with code 3", FailureReason.EXIT_CODE)),
    ([None, 1], None, None,
     Outcome(AttemptStatus.FAILED, "container of replica 0 on node n0 disappeared", FailureReason.CONTAINER_LOST)),
    ([0, 137], [False, True], None,
     Outcome(AttemptStatus.FAILED, "replica 1 on node n1 exceeded its memory limit (OOMKilled)", FailureReason.OOM_KILLED)),
    # A gang stop: the signalled replica's 143 is left out; the one that ended on its own decides.
    ([1, 143], None, [False, True],
     Outcome(AttemptStatus.FAILED, "replica 0 on node n0 exited with code 1", FailureReason.EXIT_CODE)),
    ([0, 143], None, [False, True], SUCCEEDED),
    # Every container signalled: the stop's doing, or a clean exit on the signal.
    ([143, 143], None, [True, True], SIGNALLED),
    ([137], None, [True], SIGNALLED),
    ([0], None, [True], SUCCEEDED),
])
def test_observed_outcome(steps, codes, oom, signalled, expected):
    with steps.session() as session:
        _, attempt = ended(session, codes, oom=oom, signalled=signalled)
        assert observed_outcome(attempt) == expected


# (stop request, exit codes, signalled, outcome) → (job status, attempt status, reason starts with)
CASES = [
    (None, [0], [False], JobStatus.SUCCEEDED, AttemptStatus.SUCCEEDED, "exit code 0"),
    (None, [2], [False], JobStatus.FAILED, AttemptStatus.FAILED, "exit_code: replica 0 on node n0 exited with code 2"),
    (StopRequest.USER, [143], [True], JobStatus.STOPPED, AttemptStatus.STOPPED, "stopped by user"),
    (StopRequest.USER, [0], [False], JobStatus.SUCCEEDED, AttemptStatus.SUCCEEDED, "exit code 0"),
    (StopRequest.USER, [0], [True], JobStatus.STOPPED, AttemptStatus.STOPPED, "stopped by user"),
    # It crashed on its own while the user's stop was on its way: the crash is the reason.
    (StopRequest.USER, [2], [False], JobStatus.STOPPED, AttemptStatus.STOPPED, "replica 0 on node n0 exited with code 2"),
    (StopRequest.PREEMPTED, [143], [True], JobStatus.QUEUED, AttemptStatus.PREEMPTED, "preempted"),
    # Exit 0 before any signal wins over a late preemption; exit 0 after the signal is the preemption's.
    (StopRequest.PREEMPTED, [0], [False], JobStatus.SUCCEEDED, AttemptStatus.SUCCEEDED, "exit code 0"),
    (StopRequest.PREEMPTED, [0], [True], JobStatus.QUEUED, AttemptStatus.PREEMPTED, "preempted"),
    (StopRequest.RUNTIME, [137], [True], JobStatus.FAILED, AttemptStatus.FAILED, "runtime_exceeded"),
    (StopRequest.RUNTIME, [0], [False], JobStatus.SUCCEEDED, AttemptStatus.SUCCEEDED, "exit code 0"),
    (StopRequest.GANG, [1, 143], [False, True], JobStatus.FAILED, AttemptStatus.FAILED,
     "exit_code: replica 0 on node n0 exited with code 1"),
    (StopRequest.GANG, [0, 143], [False, True], JobStatus.SUCCEEDED, AttemptStatus.SUCCEEDED, "exit code 0"),
]


@pytest.mark.parametrize(("stop", "codes", "signalled", "job_status", "attempt_status", "reason"), CASES)
def test_finish_attempt_decides_and_releases(steps, stop, codes, signalled, job_status, attempt_status, reason):
    with steps.session() as session:
        job, attempt = ended(session, codes, signalled=signalled, stop=stop)
        finish_attempt(session, job, attempt, observed_outcome(attempt), now=100.0)
        job_id, attempt_id = job.id, attempt.id
    job, attempt = steps.job(job_id), steps.attempt(attempt_id)
    assert (job.status, attempt.status) == (job_status, attempt_status)
    assert job.status_reason.startswith(reason), job.status_reason
    assert job.stop_requested is None and attempt.finished_at == 100.0
    assert all(not r.active and r.finished_at is not None for r in attempt.replicas)
    with steps.session() as session:
        assert allocations(session) == {}
    event = steps.events(job_id)[-1]
    assert event.from_status == JobStatus.RUNNING and event.to_status == job_status and event.attempt == 1


def test_a_retry_is_used_only_for_the_classes_asked_for(steps):
    with steps.session() as session:
        job, attempt = ended(session, [2], retry={"max_retries": 2, "on": ["failed"]})
        finish_attempt(session, job, attempt, observed_outcome(attempt), now=1.0)
        assert job.status == JobStatus.QUEUED and job.retries_left == 1
        lost_job, lost = ended(session, [None], retry={"max_retries": 2, "on": ["failed"]})
        finish_attempt(session, lost_job, lost, observed_outcome(lost), now=1.0)
        assert lost_job.status == JobStatus.FAILED and lost_job.retries_left == 2
        assert lost_job.status_reason.startswith("container_lost")


def test_a_requeue_uses_no_retry(steps):
    with steps.session() as session:
        job = make_job(session, status=JobStatus.STARTING, retry={"max_retries": 0})
        attempt = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)
        outcome = Outcome(AttemptStatus.FAILED, "node a: unreachable", FailureReason.START_FAILED, requeue=True)
        finish_attempt(session, job, attempt, outcome, now=1.0)
        assert job.status == JobStatus.QUEUED and job.retries_left == 0
        assert job.status_reason == "back in the queue: node a: unreachable"
        assert attempt.status == AttemptStatus.FAILED and not attempt.replicas[0].active


def test_attained_gpu_time_counts_from_the_attempts_start(steps):
    with steps.session() as session:
        job = make_job(session, status=JobStatus.RUNNING, resources={"cpus": 2})
        attempt = make_attempt(session, job, ["a"], container_ids=["c"], started_at=100.0)
        assert attempt_gpu_s(job, attempt, 160.0) == pytest.approx(60.0 * attempt_gpu_s(job, attempt, 101.0))
        never = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)
        assert attempt_gpu_s(job, never, 160.0) == 0.0
