"""The node health step (background/node_health.py): pings in parallel with a deadline, unreachable at
once, attempts lost after NODE_LOST_AFTER_S, capacity refreshed, and an admin's drain never touched."""

from __future__ import annotations

import time

from deepdock.api.enums import JobStatus, NodeHealth, NodeStatus, ReplicaStatus
from deepdock.compute.base import LABEL_JOB, GpuInfo
from deepdock.scheduler import get_policy
from deepdock.server.background import collect, node_health, observe
from deepdock.server.background.schedule import run_cycle
from deepdock.server.background.tasks import Tasks, Work
from deepdock.server.services.nodes import schedulable, set_node_status
from tests.server.background.test_collect import events_chain, released
from tests.server.factories import make_user


def health(steps) -> bool:
    return node_health.run(steps.ctx, steps.work)


def test_a_node_that_answers_stays_ready(steps):
    steps.node("a")
    assert health(steps) is False  # nothing the scheduler must see
    node = steps.node_row("a")
    assert node.status == NodeHealth.READY and node.last_error == ""


def test_stale_capacity_is_refreshed(steps):
    engine = steps.node("a")
    engine.set_gpus([GpuInfo(index=0, uuid="GPU-0", model="H100", memory=80 * 1024**3)])
    steps.clock.advance(node_health.CAPACITY_REFRESH_S + 1)
    assert health(steps) is True
    node = steps.node_row("a")
    assert [g["model"] for g in node.gpus] == ["H100"] and node.last_seen_at == steps.clock()
    assert steps.ctx.wake_scheduler.is_set()


def test_an_unreachable_node_is_marked_at_once_and_its_attempts_lost_later(steps):
    engine = steps.node("a")
    job_id, attempt_id, _ = steps.running_job(retry={"max_retries": 1, "on": ["node_lost"]})
    engine.set_unreachable(True)
    assert health(steps) is True
    node = steps.node_row("a")
    assert node.status == NodeHealth.UNREACHABLE and node.unreachable_since == steps.clock()
    assert "unreachable" in node.last_error
    assert not schedulable(node)
    assert steps.job(job_id).status == JobStatus.RUNNING  # a blip is not a loss

    steps.clock.advance(node_health.NODE_LOST_AFTER_S)
    health(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retries_left == 0
    assert job.status_reason.startswith("retrying after node_lost: node a unreachable for 10s")
    assert steps.attempt(attempt_id).replicas[0].status == ReplicaStatus.LOST
    released(steps, job_id)
    events_chain(steps, job_id)


def test_a_lost_node_fails_a_job_without_a_node_lost_retry(steps):
    engine = steps.node("a")
    job_id, _, _ = steps.running_job(retry={"max_retries": 0})
    engine.set_unreachable(True)
    health(steps)
    steps.clock.advance(node_health.NODE_LOST_AFTER_S + 1)
    health(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED and job.status_reason.startswith("node_lost")
    released(steps, job_id)


def test_a_gang_with_one_lost_node_ends_and_the_other_container_is_removed(steps):
    a = steps.node("a")
    b = steps.node("b")
    job_id, attempt_id, (c0, c1) = steps.running_job(["a", "b"])
    b.set_unreachable(True)
    health(steps)
    steps.clock.advance(node_health.NODE_LOST_AFTER_S)
    health(steps)
    r0, r1 = steps.attempt(attempt_id).replicas
    assert r1.status == ReplicaStatus.LOST and not r0.active and not r1.active
    assert steps.job(job_id).status == JobStatus.FAILED
    released(steps, job_id)
    collect.run(steps.ctx, steps.work, steps.observe())  # a's container belongs to nobody now
    assert a.list_containers({LABEL_JOB: job_id}) == []


def test_a_node_that_answers_again_is_ready_again(steps):
    engine = steps.node("a")
    engine.set_unreachable(True)
    health(steps)
    engine.set_unreachable(False)
    steps.clock.advance(1)
    assert health(steps) is True
    node = steps.node_row("a")
    assert node.status == NodeHealth.READY and node.unreachable_since is None and node.last_error == ""


def test_an_admins_drain_survives_health_changes(steps):
    engine = steps.node("a")
    with steps.session() as session:
        out = set_node_status(session, make_user(session), "a", NodeStatus.DRAINING)
    assert out.status == NodeStatus.DRAINING
    engine.set_unreachable(True)
    health(steps)
    node = steps.node_row("a")
    assert node.status == NodeHealth.UNREACHABLE and node.draining
    engine.set_unreachable(False)
    steps.clock.advance(1)
    health(steps)
    node = steps.node_row("a")
    assert node.status == NodeHealth.READY
    assert node.draining, "a node coming back must not undo the admin's drain"
    assert not schedulable(node)


def test_a_frozen_engine_is_unreachable_at_once_and_holds_up_nobody(steps, monkeypatch):
    """Node b's engine is frozen: health returns within its ping deadline, b is unreachable at once and
    not schedulable, a stays ready, a's job keeps running, observe is not held up either, and the
    scheduler places nothing on b. Real lanes: with inline tasks nothing could outlast a deadline."""
    monkeypatch.setattr(node_health, "PING_DEADLINE_S", 0.3)
    monkeypatch.setattr(observe, "OBSERVE_DEADLINE_S", 0.3)
    steps.node("a", cpus=2)
    b = steps.node("b", cpus=8, frozen_timeout_s=30)
    on_a, attempt_a, _ = steps.running_job(["a"], resources={"cpus": 1})
    b.set_frozen(True)
    work = Work(engine=Tasks(name="engine"), followers=steps.followers)
    try:
        began = time.monotonic()
        assert node_health.run(steps.ctx, work) is True
        assert time.monotonic() - began < 2.0
        node_b, node_a = steps.node_row("b"), steps.node_row("a")
        assert node_b.status == NodeHealth.UNREACHABLE and node_b.unreachable_since == steps.clock()
        assert "did not answer a ping" in node_b.last_error and not schedulable(node_b)
        assert node_a.status == NodeHealth.READY and schedulable(node_a)

        began = time.monotonic()
        obs = observe.run(steps.ctx, work)
        assert time.monotonic() - began < 2.0 and obs.seen("a") and not obs.seen("b")
        assert steps.attempt(attempt_a).replicas[0].status == ReplicaStatus.RUNNING
        assert steps.job(on_a).status == JobStatus.RUNNING

        # A second round while b's first ping is still out: still unreachable, and it still returns at once.
        began = time.monotonic()
        node_health.run(steps.ctx, work)
        assert time.monotonic() - began < 2.0
        assert steps.node_row("b").status == NodeHealth.UNREACHABLE

        # Only b could hold 4 CPUs: the job waits rather than go to the frozen node; a small one goes to a.
        big = steps.queued_job(name="big", resources={"cpus": 4})
        small = steps.queued_job(name="small", resources={"cpus": 1})
        with steps.session() as session:
            placed = run_cycle(session, get_policy("default"), steps.clock())
        assert [node for _, node in placed] == ["a"]
        assert steps.job(big).status == JobStatus.QUEUED and steps.job(big).pending_reason is not None
        assert steps.job(small).status == JobStatus.SCHEDULED
        assert all(r.node_name == "a" for a in steps.attempts(small) for r in a.replicas)
    finally:
        b.set_frozen(False)
        work.engine.close()
