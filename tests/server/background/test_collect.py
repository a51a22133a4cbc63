"""The collect step (background/collect.py): logs and artifacts kept, containers removed, the outcome
recorded, and every terminal path releasing the attempt's resources. Strays removed."""

from __future__ import annotations

from deepdock.api.enums import AttemptStatus, JobStatus, ReplicaStatus, StopRequest
from deepdock.compute.base import LABEL_JOB, LABEL_MANAGED
from deepdock.server.background import collect, stop
from tests.server.factories import make_attempt, make_job


def released(steps, job_id: str) -> None:
    """Every attempt of the job is finished and holds nothing: the scheduler sees the capacity free."""
    for attempt in steps.attempts(job_id):
        assert attempt.finished_at is not None, f"attempt {attempt.number} is still open"
        assert all(not r.active for r in attempt.replicas), f"attempt {attempt.number} still holds resources"
        assert all(r.finished_at is not None for r in attempt.replicas)
    assert steps.allocations() == {}


def events_chain(steps, job_id: str) -> list[str]:
    """The job's events, checked: each records the status it really left, never a move to itself."""
    events = steps.events(job_id)
    previous = None
    for event in events:
        assert event.from_status == previous, f"{event.to_status} event says it came from {event.from_status}"
        assert event.from_status != event.to_status
        previous = event.to_status
    return [e.to_status for e in events]


def collect_once(steps) -> int:
    return collect.run(steps.ctx, steps.work, steps.observe())


def test_success_keeps_logs_and_artifacts_and_removes_the_container(steps):
    engine = steps.node("a")
    job_id, attempt_id, (cid,) = steps.running_job()
    engine.write_log(cid, "epoch 1\n")
    engine.put_file(cid, "/workspace/artifacts/model.pt", b"weights")
    steps.clock.advance(100)
    engine.finish(cid, 0)
    assert collect_once(steps) == 1
    job, attempt = steps.job(job_id), steps.attempt(attempt_id)
    assert job.status == JobStatus.SUCCEEDED and job.finished_at == steps.clock()
    assert attempt.status == AttemptStatus.SUCCEEDED and attempt.reason == "exit code 0"
    assert job.attained_gpu_s > 0  # CPU-seconds for a CPU job: the scheduler's attained service
    assert steps.ctx.logs.path(job_id, 1, 0).read_text() == "epoch 1\n"
    assert (steps.ctx.artifacts_root / job_id / "attempt-1" / "rank-0" / "model.pt").read_bytes() == b"weights"
    assert engine.list_containers({LABEL_JOB: job_id}) == []
    released(steps, job_id)
    assert events_chain(steps, job_id)[-1] == JobStatus.SUCCEEDED


def test_a_failure_without_retries_fails_the_job(steps):
    engine = steps.node("a")
    job_id, attempt_id, (cid,) = steps.running_job()
    engine.finish(cid, 3)
    collect_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.status_reason == "exit_code: replica 0 on node a exited with code 3"
    assert steps.attempt(attempt_id).status == AttemptStatus.FAILED
    released(steps, job_id)
    events_chain(steps, job_id)


def test_a_failure_with_a_retry_goes_back_in_line(steps):
    engine = steps.node("a")
    job_id, _, (cid,) = steps.running_job(retry={"max_retries": 2, "on": ["failed"]})
    engine.finish(cid, 3)
    collect_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retries_left == 1
    assert job.status_reason.startswith("retrying after exit_code")
    released(steps, job_id)
    assert events_chain(steps, job_id)[-2:] == [JobStatus.RUNNING, JobStatus.QUEUED]


def test_oom_is_its_own_failure_class(steps):
    engine = steps.node("a")
    job_id, _, (cid,) = steps.running_job(retry={"max_retries": 1, "on": ["failed"]})
    engine.finish(cid, 137, oom=True)
    collect_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED and job.status_reason.startswith("oom_killed")
    assert job.retries_left == 1  # 'oom' was not in retry.on
    released(steps, job_id)


def test_a_user_stop_ends_stopped(steps):
    steps.node("a")
    job_id, attempt_id, _ = steps.running_job(stop_requested=StopRequest.USER)
    stop.run(steps.ctx, steps.work, steps.observe())
    collect_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.STOPPED and job.status_reason == "stopped by user"
    assert job.stop_requested is None
    assert steps.attempt(attempt_id).status == AttemptStatus.STOPPED
    released(steps, job_id)
    events_chain(steps, job_id)


def test_a_preemption_requeues_with_the_schedulers_reason(steps):
    steps.node("a")
    job_id, attempt_id, _ = steps.running_job(stop_requested=StopRequest.PREEMPTED)
    with steps.session() as session:
        job = session.get(type(steps.job(job_id)), job_id)
        job.status_reason = "preempted for j2: higher priority"
    stop.run(steps.ctx, steps.work, steps.observe())
    collect_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and job.status_reason == "preempted for j2: higher priority"
    assert job.retries_left == 0 and job.stop_requested is None
    assert steps.attempt(attempt_id).status == AttemptStatus.PREEMPTED
    released(steps, job_id)
    events_chain(steps, job_id)


def test_exit_0_before_any_signal_wins_over_a_late_preemption(steps):
    """The scheduler asked to preempt, but the job had already exited 0 and no SIGTERM was sent: it
    succeeded; it is not run again."""
    engine = steps.node("a")
    job_id, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.PREEMPTED)
    engine.finish(cid, 0)
    steps.reconcile()  # observe, stop (finds nothing running), start, collect
    assert steps.attempt(attempt_id).replicas[0].stop_sent_at is None
    job = steps.job(job_id)
    assert job.status == JobStatus.SUCCEEDED, job.status_reason
    assert job.attempt_count == 1 and steps.attempt(attempt_id).status == AttemptStatus.SUCCEEDED
    released(steps, job_id)
    assert JobStatus.QUEUED not in events_chain(steps, job_id)[1:]


def test_exit_0_after_the_preemption_signal_is_requeued(steps):
    """The stop was sent (stop_sent_at) and the job then exited 0 on SIGTERM (it checkpointed): the
    preemption decides, so the job goes back in line."""
    engine = steps.node("a")
    job_id, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.PREEMPTED)
    engine.stop = lambda container_id, grace_s: engine.finish(container_id, 0)  # type: ignore[method-assign]
    stop.run(steps.ctx, steps.work, steps.observe())
    (replica,) = steps.attempt(attempt_id).replicas
    assert replica.stop_sent_at is not None
    collect_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED
    assert steps.attempt(attempt_id).status == AttemptStatus.PREEMPTED
    assert steps.attempt(attempt_id).replicas[0].exit_code == 0
    released(steps, job_id)


def test_exit_0_before_a_user_stop_is_a_success(steps):
    engine = steps.node("a")
    job_id, _, (cid,) = steps.running_job(stop_requested=StopRequest.USER)
    engine.finish(cid, 0)
    steps.reconcile()
    assert steps.job(job_id).status == JobStatus.SUCCEEDED
    released(steps, job_id)


def test_max_runtime_fails_the_job(steps):
    steps.node("a")
    job_id, _, _ = steps.running_job(max_runtime=60)
    steps.clock.advance(61)
    steps.reconcile()  # observe asks for the stop, stop signals
    steps.reconcile()  # observe sees the exit, collect records it
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.status_reason.startswith("runtime_exceeded: ran longer than max_runtime 60s")
    released(steps, job_id)
    events_chain(steps, job_id)


def test_a_gang_failure_is_judged_by_the_replica_that_ended_on_its_own(steps):
    a = steps.node("a")
    steps.node("b")
    job_id, attempt_id, (c0, c1) = steps.running_job(["a", "b"])
    a.finish(c0, 1)
    steps.reconcile()  # gang rule: stop requested, replica 1 signalled (143)
    steps.reconcile()  # both ended: collected
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.status_reason == "exit_code: replica 0 on node a exited with code 1"  # not rank 1's 143
    assert [r.exit_code for r in steps.attempt(attempt_id).replicas] == [1, 143]
    released(steps, job_id)
    assert steps.engine("b").list_containers({}) == [] and a.list_containers({}) == []


def test_a_lost_container_fails_or_retries_as_node_lost(steps):
    engine = steps.node("a")
    job_id, attempt_id, (cid,) = steps.running_job(retry={"max_retries": 1, "on": ["node_lost"]})
    engine.remove(cid)
    steps.clock.advance(1)
    collect_once(steps)
    job = steps.job(job_id)
    assert steps.attempt(attempt_id).replicas[0].status == ReplicaStatus.LOST
    assert job.status == JobStatus.QUEUED and "container_lost" in job.status_reason
    released(steps, job_id)


def test_a_stop_before_the_containers_started_is_ended_by_collect(steps):
    steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.SCHEDULED, stop_requested=StopRequest.USER)
        attempt = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)
    steps.reconcile()  # start skips it (a stop is asked for), collect ends it
    after = steps.attempt(attempt.id)
    assert after.status == AttemptStatus.STOPPED
    assert after.reason == "stopped before its containers started"
    assert steps.job(job.id).status == JobStatus.STOPPED
    assert steps.engine("a").list_containers({}) == []
    released(steps, job.id)
    events_chain(steps, job.id)


def test_a_preemption_before_the_containers_started_requeues(steps):
    steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.SCHEDULED, stop_requested=StopRequest.PREEMPTED)
        attempt = make_attempt(session, job, ["a"], status=AttemptStatus.SCHEDULED)
    steps.reconcile()
    assert steps.attempt(attempt.id).status == AttemptStatus.PREEMPTED
    assert steps.job(job.id).status == JobStatus.QUEUED
    released(steps, job.id)


def test_an_attempt_still_running_is_not_collected(steps):
    steps.node("a")
    job_id, attempt_id, _ = steps.running_job()
    assert collect_once(steps) == 0
    assert steps.attempt(attempt_id).finished_at is None
    assert steps.job(job_id).status == JobStatus.RUNNING


def test_strays_of_known_jobs_are_removed_and_others_left(steps):
    engine = steps.node("a")
    with steps.session() as session:
        job = make_job(session, status=JobStatus.SUCCEEDED)
    ours = steps.container("a", job.id, 1)  # its attempt is long over: nobody owns it any more
    theirs = engine.run(type(engine.spec_of(ours))(
        name="someone-elses", image="busybox:latest", command=["true"], env={},
        labels={LABEL_MANAGED: "true", LABEL_JOB: "not-a-job-of-ours"}, cpus=1, memory=1024**3, pids_limit=64,
        shm_size=1024**2))
    collect_once(steps)
    ids = {c.id for c in engine.list_containers({})}
    assert ours not in ids and theirs in ids
