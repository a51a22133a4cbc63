"""The controller (background/controller.py): one round of each step wired in order, and the lease that
lets one server instance at a time run the loops. No loop threads: each round is called once."""

from __future__ import annotations

from deepdock.api.enums import JobStatus, NodeHealth, StopRequest
from deepdock.compute.base import LABEL_JOB
from deepdock.server.background.controller import LEASE_NAME, LEASE_TTL_S, Controller
from deepdock.server.db.models import Lease
from deepdock.server.services import jobs as job_service
from tests.server.background.test_collect import events_chain, released
from tests.server.factories import job_spec_of, make_user


def submit(steps, **spec) -> str:
    with steps.session() as session:
        return job_service.submit_job(session, make_user(session), job_spec_of(**spec)).id


def test_schedule_once_places_and_hands_the_attempt_to_start(steps):
    engine = steps.node("a")
    job_id = submit(steps)
    assert steps.schedule() == 1
    # The scheduler's hand-off ran the start task at once (inline tasks): the container exists.
    job = steps.job(job_id)
    assert job.status == JobStatus.RUNNING
    (container,) = engine.list_containers({LABEL_JOB: job_id})
    assert steps.attempts(job_id)[0].replicas[0].container_id == container.id
    assert steps.schedule() == 0


def test_a_job_from_submit_to_success_in_single_rounds(steps):
    engine = steps.node("a")
    job_id = submit(steps)
    steps.schedule()
    (container,) = engine.list_containers({LABEL_JOB: job_id})
    engine.write_log(container.id, "done\n")
    steps.reconcile()
    assert steps.job(job_id).status == JobStatus.RUNNING
    steps.clock.advance(10)
    engine.finish(container.id, 0)
    steps.reconcile()
    assert steps.job(job_id).status == JobStatus.SUCCEEDED
    assert events_chain(steps, job_id) == [JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTING,
                                           JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert steps.ctx.logs.path(job_id, 1, 0).read_text() == "done\n"
    assert engine.list_containers({LABEL_JOB: job_id}) == []
    released(steps, job_id)


def test_a_user_stop_through_the_rounds(steps):
    engine = steps.node("a")
    job_id = submit(steps)
    steps.schedule()
    with steps.session() as session:
        job_service.stop_job(session, make_user(session), job_id)
    assert steps.job(job_id).stop_requested == StopRequest.USER
    steps.reconcile()  # observe, then stop signals (143); collect runs before the next listing sees it
    steps.reconcile()
    assert steps.job(job_id).status == JobStatus.STOPPED
    assert engine.list_containers({}) == []
    released(steps, job_id)
    events_chain(steps, job_id)


def test_a_preemption_through_the_rounds_requeues_and_places_the_preemptor(steps):
    steps.node("a", cpus=2)
    low = submit(steps, name="low", resources={"cpus": 2})
    steps.schedule()
    high = submit(steps, name="high", priority=10, resources={"cpus": 2})
    steps.schedule()  # asks low to stop
    steps.reconcile()  # signalled
    steps.reconcile()  # collected: low back in the queue
    assert steps.job(low).status == JobStatus.QUEUED
    steps.schedule()
    assert steps.job(high).status == JobStatus.RUNNING
    assert steps.job(low).status == JobStatus.QUEUED
    events_chain(steps, low)


def test_health_once_runs_the_health_step(steps):
    engine = steps.node("a")
    engine.set_unreachable(True)
    steps.controller.health_once()
    assert steps.node_row("a").status == NodeHealth.UNREACHABLE


def test_one_instance_holds_the_lease_until_it_expires(steps):
    first, second = steps.controller, Controller(steps.ctx, steps.work)
    assert first._try_lease() is True
    assert second._try_lease() is False
    assert first._try_lease() is True  # renewing its own
    steps.clock.advance(LEASE_TTL_S + 1)
    assert second._try_lease() is True  # the first stopped renewing: taken over
    assert first._try_lease() is False


def test_gaining_the_lease_wakes_the_loops_and_losing_it_clears_the_flag(steps):
    first, second = steps.controller, Controller(steps.ctx, steps.work)
    steps.ctx.wake_scheduler.clear()
    steps.ctx.wake_reconciler.clear()
    first._renew_lease()
    assert first.has_lease.is_set()
    assert steps.ctx.wake_scheduler.is_set() and steps.ctx.wake_reconciler.is_set()
    second._renew_lease()
    assert not second.has_lease.is_set()
    steps.clock.advance(LEASE_TTL_S + 1)
    second._renew_lease()
    first._renew_lease()
    assert second.has_lease.is_set() and not first.has_lease.is_set()


def test_releasing_the_lease_lets_another_take_it_at_once(steps):
    first, second = steps.controller, Controller(steps.ctx, steps.work)
    assert first._try_lease()
    second._release_lease()  # not its lease: nothing happens
    assert second._try_lease() is False
    first._release_lease()
    with steps.session() as session:
        assert session.get(Lease, LEASE_NAME) is None
    assert second._try_lease() is True


def test_a_crash_looping_job_backs_off_exponentially_up_to_the_cap(steps):
    """Kubernetes' CrashLoopBackOff shape: 10 s, 20 s, 40 s ... at most 300 s between attempts, each wait
    shown as the pending reason with the next attempt's time; never re-placed before it."""
    engine = steps.node("a")
    job_id = submit(steps, retry={"max_retries": 7, "on": ["failed"]})
    delays = []
    for _ in range(7):
        assert steps.schedule() == 1
        (container,) = [c for c in engine.list_containers({LABEL_JOB: job_id}) if not c.finished]
        engine.finish(container.id, 1)
        failed_at = steps.clock()
        steps.reconcile()
        job = steps.job(job_id)
        assert job.status == JobStatus.QUEUED and job.retry_at is not None
        delay = job.retry_at - failed_at
        assert job.pending_reason["code"] == "backoff"
        assert job.pending_reason["details"]["retry_at"] == job.retry_at
        delays.append(delay)
        steps.clock.advance(delay - 0.5)
        assert steps.schedule() == 0, "placed again before its backoff ended"
        assert steps.job(job_id).pending_reason["code"] == "backoff"
        steps.clock.advance(0.5)
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert steps.schedule() == 1  # the last retry
    job = steps.job(job_id)
    assert job.retry_at is None and job.attempt_count == 8


def test_a_job_lost_with_its_node_is_retried_without_backoff(steps):
    from deepdock.server.background.node_health import fail_attempts_on

    steps.node("a")
    job_id = submit(steps, retry={"max_retries": 1, "on": ["node_lost"]})
    steps.schedule()
    with steps.session() as session:
        from sqlalchemy import select

        from deepdock.server.db.models import Node
        node = session.scalar(select(Node).where(Node.name == "a"))
        fail_attempts_on(session, node, steps.clock())
        session.commit()
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retry_at is None
