"""services/lifecycle.py: allowed transitions, the event each one records, and the version fence that
turns a write based on a stale read into StaleStateError, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from deepdock.api.enums import AttemptStatus, JobStatus, ReplicaStatus
from deepdock.errors import ConflictError
from deepdock.server.db.models import Attempt, Job, JobEvent, Replica
from deepdock.server.services.lifecycle import ALLOWED, StaleStateError, fenced, transition
from tests.server.factories import make_attempt, make_job


def test_every_allowed_transition_records_where_it_came_from(steps):
    for source, targets in ALLOWED.items():
        for target in targets:
            with steps.session() as session:
                job = make_job(session, status=source)
                transition(session, job, target, "why", attempt=1, at=123.0)
                job_id = job.id
            event = steps.events(job_id)[-1]
            assert (event.from_status, event.to_status, event.reason, event.at) == (source, target, "why", 123.0)
            assert event.from_status != event.to_status


def test_terminal_states_allow_nothing_and_a_status_never_moves_to_itself(steps):
    for status in JobStatus:
        assert status not in ALLOWED[status]
        if status.terminal:
            assert ALLOWED[status] == frozenset()
    with steps.session() as session:
        job = make_job(session, status=JobStatus.SUCCEEDED)
        with pytest.raises(ConflictError, match="cannot go from SUCCEEDED to RUNNING"):
            transition(session, job, JobStatus.RUNNING)
        queued = make_job(session)
        with pytest.raises(ConflictError):
            transition(session, queued, JobStatus.RUNNING)  # a job is placed before it runs


def test_transition_sets_the_times_and_clears_the_pending_reason(steps):
    with steps.session() as session:
        job = make_job(session)
        job.pending_reason = {"code": "x", "message": "m", "position": 1, "details": {}}
        transition(session, job, JobStatus.SCHEDULED, at=10.0)
        assert job.pending_reason is None and job.started_at is None
        transition(session, job, JobStatus.RUNNING, at=20.0)
        transition(session, job, JobStatus.QUEUED, at=30.0)  # preempted
        transition(session, job, JobStatus.SCHEDULED, at=40.0)
        transition(session, job, JobStatus.RUNNING, at=50.0)
        assert job.started_at == 20.0  # the first start stays
        transition(session, job, JobStatus.SUCCEEDED, at=60.0)
        assert job.finished_at == 60.0 and job.updated_at == 60.0


def test_a_transition_based_on_a_stale_read_is_refused(steps):
    """Two sessions read the same job; the first moves it; the second's move, based on what it read,
    must fail rather than overwrite (and must leave no event behind)."""
    with steps.session() as session:
        job_id = make_job(session).id
    first_cm, second_cm = steps.db.session(), steps.db.session()
    first, second = first_cm.__enter__(), second_cm.__enter__()
    try:
        mine = first.get(Job, job_id)
        theirs = second.get(Job, job_id)
        transition(first, mine, JobStatus.SCHEDULED, "placed")
        first.commit()
        with pytest.raises(StaleStateError, match=f"job {job_id} changed concurrently"):
            transition(second, theirs, JobStatus.STOPPED, "stopped by user before it started")
        second.rollback()
    finally:
        first_cm.__exit__(None, None, None)
        second_cm.__exit__(None, None, None)
    job = steps.job(job_id)
    assert job.status == JobStatus.SCHEDULED and job.version == 2  # created at 1, bumped once
    assert [e.to_status for e in steps.events(job_id)] == [JobStatus.QUEUED, JobStatus.SCHEDULED]


def test_attempt_and_replica_writes_are_fenced_too(steps):
    with steps.session() as session:
        job = make_job(session, status=JobStatus.RUNNING)
        attempt = make_attempt(session, job, ["a"], container_ids=["c1"])
        attempt_id, replica_id = attempt.id, attempt.replicas[0].id
    for model, key, change in ((Attempt, attempt_id, ("status", AttemptStatus.FAILED)),
                               (Replica, replica_id, ("status", ReplicaStatus.EXITED))):
        with steps.session() as a, steps.session() as b:
            row_a, row_b = a.get(model, key), b.get(model, key)
            setattr(row_a, *change)
            a.commit()
            row_b.finished_at = 1.0
            with pytest.raises(StaleStateError), fenced(f"{model.__name__} {key}"):
                b.flush()
            b.rollback()


def test_fenced_passes_other_errors_through(steps):
    with pytest.raises(ValueError), fenced("x"):
        raise ValueError("not a version check")


def test_events_are_written_in_the_callers_transaction(steps):
    with pytest.raises(RuntimeError), steps.session() as session:
        job = make_job(session, job_id="rolled-back")
        transition(session, job, JobStatus.SCHEDULED)
        raise RuntimeError("the step failed after the transition")
    with steps.session() as session:
        assert session.get(Job, "rolled-back") is None
        assert session.query(JobEvent).filter_by(job_id="rolled-back").count() == 0
