"""services/jobs.py: submit (validated against the cluster), describe, list, status, stop (retried on a
concurrent change), and how the rows are stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from deepdock.api.enums import JobStatus, StopRequest
from deepdock.errors import NotFoundError, PermissionDeniedError, SpecError, UnschedulableError
from deepdock.server.db.models import Job
from deepdock.server.services import jobs as job_service
from deepdock.server.services.lifecycle import StaleStateError
from tests.server.factories import GIB, job_spec_of, make_attempt, make_job, make_node, make_project, make_user


def submit(steps, user_name: str = "admin", **spec):
    with steps.session() as session:
        return job_service.submit_job(session, make_user(session, user_name), job_spec_of(**spec))


def test_submit_stores_the_spec_and_its_copied_columns(steps):
    steps.node("a", gpus=2)
    out = submit(steps, name="train", priority=5, replicas=2, preemptible=False,
                 resources={"cpus": 2, "memory": "3g", "gpus": 1, "gpu_type": "A100"},
                 retry={"max_retries": 4, "on": ["failed"]})
    assert out.status == JobStatus.QUEUED and out.project == "default" and out.user == "admin"
    job = steps.job(out.id)
    spec = job_service.job_spec(job)
    assert spec == job_spec_of(name="train", priority=5, replicas=2, preemptible=False,
                               resources={"cpus": 2, "memory": "3g", "gpus": 1, "gpu_type": "A100"},
                               retry={"max_retries": 4, "on": ["failed"]})
    assert job_service.job_spec(job) is spec  # parsed once per loaded row
    assert (job.name, job.priority, job.replicas, job.preemptible, job.retries_left) == ("train", 5, 2, False, 4)
    assert (job.cpus, job.memory, job.gpus, job.gpu_type, job.image) == (2, 3 * GIB, 1, "A100", "busybox:latest")
    (event,) = steps.events(out.id)
    assert (event.from_status, event.to_status, event.reason) == (None, JobStatus.QUEUED, "submitted")


def test_submit_refuses_what_no_node_could_ever_hold(steps):
    with pytest.raises(UnschedulableError, match="no nodes are registered"):
        submit(steps)
    steps.node("a", cpus=4, gpus=2, gpu_memory_gib=16)
    with pytest.raises(UnschedulableError) as info:
        submit(steps, resources={"gpus": 1, "gpu_memory": "40g"})
    assert info.value.status_code == 422 and "40.0 GiB" in info.value.message
    with pytest.raises(UnschedulableError, match="4"):
        submit(steps, resources={"gpus": 4})
    with pytest.raises(UnschedulableError):
        submit(steps, resources={"cpus": 8})
    assert submit(steps, resources={"gpus": 1, "gpu_memory": "16g"}).status == JobStatus.QUEUED
    with steps.session() as session:
        assert session.query(Job).count() == 1  # nothing stored for a refused one


def test_submit_checks_the_code_package_and_the_project(steps):
    steps.node("a")
    with steps.session() as session:
        with pytest.raises(SpecError, match="was not uploaded"):
            job_service.submit_job(session, make_user(session), job_spec_of(), code_sha256="ab" * 32)
        alice = make_user(session, "alice", is_admin=False)
        make_project(session, "vision", members=[alice])
        make_project(session, "nlp")
    with pytest.raises(PermissionDeniedError):
        submit(steps, "alice", project="nlp")
    with pytest.raises(NotFoundError):
        submit(steps, "alice", project="nope")
    assert submit(steps, "alice", project="vision").project == "vision"
    assert submit(steps, project="brand-new").project == "brand-new"  # an admin's project is made on demand


def test_jobs_submitted_together_share_a_cohort(steps):
    steps.node("a")
    first, second = submit(steps), submit(steps)
    other = submit(steps, resources={"cpus": 2})
    named = submit(steps, cohort="sweep-1")
    cohorts = {j.id: steps.job(j.id).cohort for j in (first, second, other, named)}
    assert cohorts[first.id] == cohorts[second.id] == first.id
    assert cohorts[other.id] == other.id and cohorts[named.id] == "default/sweep-1"


def test_describe_shows_attempts_replicas_and_events(steps):
    with steps.session() as session:
        job = make_job(session, status=JobStatus.RUNNING)
        make_attempt(session, job, ["a", "b"], container_ids=["c0", "c1"])
        detail = job_service.describe_job(session, make_user(session), job.id, str(steps.ctx.artifacts_root))
    assert detail.id == job.id and detail.attempts == 1
    (attempt,) = detail.attempt_list
    assert [(r.rank, r.node, r.container_id) for r in attempt.replicas] == [(0, "a", "c0"), (1, "b", "c1")]
    assert [e.to_status for e in detail.events] == [JobStatus.QUEUED, JobStatus.RUNNING]
    assert detail.artifacts_dir == str(steps.ctx.artifacts_root / job.id)


def test_a_job_is_found_by_id_or_newest_name_and_hidden_from_other_projects(steps):
    with steps.session() as session:
        admin = make_user(session)
        bob = make_user(session, "bob", is_admin=False)
        make_project(session, "nlp", members=[bob])
        old = make_job(session, name="same", submitted_at=1.0)
        new = make_job(session, name="same", submitted_at=2.0)
        assert job_service.get_job(session, admin, "same").id == new.id
        assert job_service.get_job(session, admin, old.id).id == old.id
        with pytest.raises(NotFoundError):
            job_service.get_job(session, bob, old.id)
        with pytest.raises(NotFoundError):
            job_service.get_job(session, bob, "same")
    assert job_service.read_status(steps.db, admin, old.id)["status"] == JobStatus.QUEUED
    assert job_service.read_status(steps.db, admin, "same")["id"] == new.id
    with pytest.raises(NotFoundError):
        job_service.read_status(steps.db, bob, old.id)


def test_list_jobs_filters_and_rejects_unknown_statuses(steps):
    with steps.session() as session:
        admin = make_user(session)
        running = make_job(session, name="r", status=JobStatus.RUNNING, submitted_at=1.0)
        queued = make_job(session, name="q", submitted_at=2.0)
        rows = job_service.list_jobs(session, admin, status=["RUNNING", "QUEUED"])
        assert [r["id"] for r in rows] == [queued.id, running.id]
        assert [r["id"] for r in job_service.list_jobs(session, admin, name="r")] == [running.id]
        assert [r["id"] for r in job_service.list_jobs(session, admin, before=2.0)] == [running.id]
        carol = make_user(session, "carol", is_admin=False)
        hers = make_job(session, carol, name="c", submitted_at=3.0)
        assert [r["id"] for r in job_service.list_jobs(session, admin, owner="carol")] == [hers.id]
        assert [r["id"] for r in job_service.list_jobs(session, admin, owner="admin")] == [queued.id, running.id]
        assert job_service.list_jobs(session, admin, owner="nobody") == []
        with pytest.raises(SpecError, match="SLEEPING"):
            job_service.list_jobs(session, admin, status=["SLEEPING"])


def test_stopping_a_queued_job_ends_it_now(steps):
    with steps.session() as session:
        job_id = make_job(session).id
    with steps.session() as session:
        out = job_service.stop_job(session, make_user(session), job_id)
    assert out.status == JobStatus.STOPPED
    job = steps.job(job_id)
    assert job.status_reason == "stopped by user before it started" and job.finished_at is not None
    assert [(e.from_status, e.to_status) for e in steps.events(job_id)] == [(None, JobStatus.QUEUED),
                                                                             (JobStatus.QUEUED, JobStatus.STOPPED)]


def test_stopping_a_placed_job_asks_the_stop_step(steps):
    with steps.session() as session:
        job_id = make_job(session, status=JobStatus.RUNNING).id
    with steps.session() as session:
        out = job_service.stop_job(session, make_user(session), job_id)
    assert out.status == JobStatus.RUNNING and out.stop_requested == StopRequest.USER
    version = steps.job(job_id).version
    with steps.session() as session:
        job_service.stop_job(session, make_user(session), job_id)  # asked already: nothing written
    assert steps.job(job_id).version == version
    with steps.session() as session:
        done = make_job(session, status=JobStatus.SUCCEEDED)
    with steps.session() as session:
        assert job_service.stop_job(session, make_user(session), done.id).status == JobStatus.SUCCEEDED


def test_a_stop_that_meets_a_concurrent_change_reads_again(steps, monkeypatch):
    """Between the stop's read and its write a background step changes the job (a new pending reason):
    the stop's write is refused by the version check, and stop_job reads again and succeeds."""
    with steps.session() as session:
        job_id = make_job(session, status=JobStatus.RUNNING).id
    real_get_job = job_service.get_job
    reads = []

    def get_then_change(session, user, ref):
        job = real_get_job(session, user, ref)
        reads.append(job.version)
        if len(reads) == 1:
            with steps.db.session() as other:
                other.get(Job, job_id).status_reason = "written by a background step meanwhile"
        return job

    monkeypatch.setattr(job_service, "get_job", get_then_change)
    with steps.session() as session:
        out = job_service.stop_job(session, make_user(session), job_id)
    assert out.stop_requested == StopRequest.USER
    assert len(reads) == 2 and reads[1] == reads[0] + 1
    job = steps.job(job_id)
    assert job.stop_requested == StopRequest.USER
    assert job.status_reason == "written by a background step meanwhile"  # nothing overwritten


def test_a_stop_that_always_meets_a_concurrent_change_gives_up_with_a_conflict(steps, monkeypatch):
    with steps.session() as session:
        job_id = make_job(session, status=JobStatus.RUNNING).id
    real_get_job = job_service.get_job

    def get_then_change(session, user, ref):
        job = real_get_job(session, user, ref)
        with steps.db.session() as other:
            other.get(Job, job_id).updated_at += 1
        return job

    monkeypatch.setattr(job_service, "get_job", get_then_change)
    with pytest.raises(StaleStateError) as info, steps.session() as session:
        job_service.stop_job(session, make_user(session), job_id)
    assert info.value.status_code == 409
    assert steps.job(job_id).stop_requested is None


def test_statuses_are_stored_as_the_enum_values(steps):
    with steps.session() as session:
        make_node(session, "a")
        job = make_job(session, status=JobStatus.RUNNING)
        make_attempt(session, job, ["a"], container_ids=["c"])
    with steps.session() as session:
        job_service.stop_job(session, make_user(session), job.id)
    with steps.db.engine.connect() as conn:
        assert conn.execute(text("SELECT status, stop_requested FROM jobs")).one() == ("RUNNING", "user")
        assert conn.execute(text("SELECT status FROM attempts")).scalar_one() == "RUNNING"
        assert conn.execute(text("SELECT status FROM replicas")).scalar_one() == "RUNNING"
        assert conn.execute(text("SELECT from_status, to_status FROM job_events ORDER BY id")).all() == [
            (None, "QUEUED"), ("QUEUED", "RUNNING")]
        assert conn.execute(text("SELECT status, draining FROM nodes")).one() == ("ready", False)
