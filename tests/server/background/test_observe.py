"""The observe step (background/observe.py): listings → replica rows, the lost rule, adoption, the gang rule,
max_runtime. Rows built with the factories, the step called once, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future

from deepdock.api.enums import AttemptStatus, JobStatus, NodeHealth, ReplicaStatus, StopRequest
from deepdock.server.background import observe
from deepdock.server.background.observe import start_key
from tests.server.factories import make_attempt, make_job


def test_a_running_container_keeps_its_replica_running(steps):
    steps.node("a")
    job_id, attempt_id, _ = steps.running_job()
    obs = steps.observe()
    assert obs.seen("a")
    (replica,) = steps.attempt(attempt_id).replicas
    assert replica.status == ReplicaStatus.RUNNING and replica.active
    assert steps.job(job_id).stop_requested is None


def test_an_exited_container_records_its_code_and_oom(steps):
    engine = steps.node("a")
    _, attempt_id, (cid,) = steps.running_job()
    steps.clock.advance(30)
    engine.finish(cid, 137, oom=True)
    steps.observe()
    (replica,) = steps.attempt(attempt_id).replicas
    assert replica.status == ReplicaStatus.EXITED
    assert (replica.exit_code, replica.oom_killed) == (137, True)
    assert replica.finished_at == steps.clock()


def test_lost_only_by_a_listing_that_began_after_the_id_was_recorded(steps):
    steps.node("a")
    now = steps.clock()
    with steps.session() as session:
        job = make_job(session, status=JobStatus.RUNNING, started_at=now)
        # The start step wrote this id a moment after the listing below began: that listing cannot show it.
        late = make_attempt(session, job, ["a"], container_ids=["c-late"], recorded_at=now + 1)
        job_id, late_id = job.id, late.id
    steps.observe()
    (replica,) = steps.attempt(late_id).replicas
    assert replica.status == ReplicaStatus.RUNNING, "a listing begun before the id was recorded must not call it lost"

    steps.clock.advance(2)  # the next listing begins after recorded_at and still does not show it
    steps.observe()
    (replica,) = steps.attempt(late_id).replicas
    assert replica.status == ReplicaStatus.LOST
    assert replica.finished_at == steps.clock()
    assert steps.job(job_id).stop_requested is None  # a single replica: no gang to stop


def test_lost_when_recorded_before_the_listing(steps):
    steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.RUNNING, started_at=steps.clock())
        early = make_attempt(session, job, ["a"], container_ids=["c-early"], recorded_at=steps.clock() - 5)
    steps.observe()
    assert steps.attempt(early.id).replicas[0].status == ReplicaStatus.LOST


def test_a_replica_without_a_recorded_time_is_never_called_lost(steps):
    steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.SCHEDULED)
        attempt = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)  # no container yet
    steps.observe()
    (replica,) = steps.attempt(attempt.id).replicas
    assert replica.status == ReplicaStatus.SCHEDULED and replica.active


def test_an_unreachable_node_is_not_judged_and_is_marked_unreachable(steps):
    engine = steps.node("a")
    job_id, attempt_id, _ = steps.running_job()
    engine.set_unreachable(True)
    steps.clock.advance(60)
    obs = steps.observe()
    assert not obs.seen("a")
    (replica,) = steps.attempt(attempt_id).replicas
    assert replica.status == ReplicaStatus.RUNNING  # not lost: nobody looked
    node = steps.node_row("a")
    assert node.status == NodeHealth.UNREACHABLE and node.unreachable_since == steps.clock()
    assert "unreachable" in node.last_error


def test_one_replica_ending_stops_the_gang(steps):
    a, _ = steps.node("a"), steps.node("b")
    job_id, attempt_id, (c0, c1) = steps.running_job(["a", "b"])
    a.finish(c0, 1)
    steps.observe()
    job = steps.job(job_id)
    assert job.stop_requested == StopRequest.GANG
    statuses = [r.status for r in steps.attempt(attempt_id).replicas]
    assert statuses == [ReplicaStatus.EXITED, ReplicaStatus.RUNNING]


def test_max_runtime_asks_for_a_stop(steps):
    steps.node("a")
    job_id, _, _ = steps.running_job(max_runtime=60)
    steps.observe()
    assert steps.job(job_id).stop_requested is None
    steps.clock.advance(61)
    steps.observe()
    job = steps.job(job_id)
    assert job.stop_requested == StopRequest.RUNTIME
    assert "max_runtime 60s" in job.status_reason


def test_running_containers_are_adopted_after_a_restart(steps):
    steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.STARTING)
        attempt = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)
    # The start task made the container, then the server died before it wrote the id.
    cid = steps.container("a", job.id, 1)
    steps.observe()
    after = steps.attempt(attempt.id)
    assert after.status == AttemptStatus.RUNNING and after.started_at == steps.clock()
    assert after.replicas[0].container_id == cid and after.replicas[0].recorded_at == steps.clock()
    assert steps.job(job.id).status == JobStatus.RUNNING
    assert steps.events(job.id)[-1].reason == "adopted running containers"


def test_an_attempt_being_started_is_left_to_the_start_step(steps):
    steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.STARTING)
        attempt = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)
    steps.container("a", job.id, 1)
    steps.engine_tasks._in_flight[start_key(attempt.id)] = Future()  # a start task still running
    try:
        steps.observe()
    finally:
        steps.engine_tasks._in_flight.pop(start_key(attempt.id))
    assert steps.attempt(attempt.id).replicas[0].container_id is None
    assert steps.job(job.id).status == JobStatus.STARTING


def test_a_frozen_engine_holds_up_nobody(steps, monkeypatch):
    """Node b's engine is frozen (SIGSTOPped dockerd): the listing of a still arrives, a's replicas stay
    RUNNING, b's are not judged (not lost), and the step returns within its deadline. Real lanes here:
    with inline tasks nothing could outlast the deadline."""
    from deepdock.server.background.tasks import Tasks, Work

    monkeypatch.setattr(observe, "OBSERVE_DEADLINE_S", 0.3)
    steps.node("a")
    b = steps.node("b", frozen_timeout_s=30)
    on_a, attempt_a, _ = steps.running_job(["a"])
    on_b, attempt_b, _ = steps.running_job(["b"])
    b.set_frozen(True)
    work = Work(engine=Tasks(name="engine"), followers=steps.followers)
    try:
        began = time.monotonic()
        obs = observe.run(steps.ctx, work)
        took = time.monotonic() - began
        assert took < 2.0, f"observe waited {took:.1f}s on a frozen engine"
        assert obs.seen("a") and not obs.seen("b")
        assert steps.attempt(attempt_a).replicas[0].status == ReplicaStatus.RUNNING
        assert steps.attempt(attempt_b).replicas[0].status == ReplicaStatus.RUNNING  # unseen, not lost
        # The next tick does not queue a second listing behind the frozen one, and returns as fast.
        began = time.monotonic()
        obs = observe.run(steps.ctx, work)
        assert time.monotonic() - began < 2.0 and not obs.seen("b")
        assert steps.job(on_a).stop_requested is None and steps.job(on_b).stop_requested is None
    finally:
        b.set_frozen(False)
        work.engine.close()


def test_a_gang_silent_for_its_progress_timeout_is_stopped_as_stalled_and_fails(steps):
    a = steps.node("a")
    job_id, attempt_id, (c0, c1) = steps.running_job(["a", "a"], progress_timeout=30)
    now = steps.clock()
    log0 = steps.ctx.logs.path(job_id, 1, 0)
    log0.parent.mkdir(parents=True, exist_ok=True)
    log0.write_bytes(b"step 1\n")
    os.utime(log0, (now + 10, now + 10))  # rank 0 wrote 10 s after the start
    steps.clock.advance(35)  # 25 s since: within the timeout
    steps.observe()
    assert steps.job(job_id).stop_requested is None
    steps.clock.advance(10)  # 35 s of silence from every rank
    steps.observe()
    job = steps.job(job_id)
    assert job.stop_requested == StopRequest.STALLED and "progress_timeout 30s" in job.status_reason
    for cid in (c0, c1):
        a.finish(cid, 143)
    steps.reconcile()
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED and job.status_reason.startswith("no_progress: no log line")
    assert steps.attempt(attempt_id).status == AttemptStatus.FAILED


def test_a_broken_gangs_other_ranks_get_a_short_grace(steps):
    from deepdock.server.background.stop import BROKEN_GANG_GRACE_S, _gang_broken, _grace

    a = steps.node("a")
    job_id, _, (c0, _) = steps.running_job(["a", "a"], stop_grace=60)
    assert _grace(steps.ctx, steps.job(job_id)) == 60
    a.finish(c0, 0)
    steps.observe()  # rank 0 finished cleanly: the gang rule asks rank 1 to stop, with its full grace
    job = steps.job(job_id)
    with steps.session() as session:
        broken = _gang_broken(session, job_id)
    assert job.stop_requested == StopRequest.GANG and not broken and _grace(steps.ctx, job, broken) == 60
    assert _grace(steps.ctx, job, True) == BROKEN_GANG_GRACE_S  # a rank failed
    with steps.session() as session:
        session.get(type(job), job_id).stop_requested = StopRequest.STALLED
    assert _grace(steps.ctx, steps.job(job_id)) == BROKEN_GANG_GRACE_S
