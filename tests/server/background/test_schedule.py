"""The schedule step (background/schedule.py): rows in, the pure policy's decisions written back out —
placements as attempts with replicas, preemptions as stop requests, waits as pending reasons."""

from __future__ import annotations

import pytest

from deepdock.api.enums import AttemptStatus, JobStatus, NodeHealth, ReplicaStatus, StopRequest
from deepdock.scheduler import get_policy
from deepdock.scheduler.types import GPU_MEMORY_UNAVAILABLE, INSUFFICIENT_RESOURCES, PREEMPTING
from deepdock.server.background.schedule import FinishedJobs, container_name, run_cycle
from deepdock.server.db.models import Job
from deepdock.server.services.distributed import RENDEZVOUS_PORTS
from deepdock.server.services.lifecycle import StaleStateError, transition
from tests.server.factories import GIB, make_job, make_project


def cycle(steps, policy: str = "default") -> list[tuple[int, str]]:
    with steps.session() as session:
        return run_cycle(session, get_policy(policy), steps.clock())


def placed_nodes(steps, job_id: str) -> list[str]:
    (attempt,) = steps.attempts(job_id)
    return [r.node_name for r in attempt.replicas]


def test_a_queued_job_is_placed_as_an_attempt_with_replicas(steps):
    steps.node("a")
    job_id = steps.queued_job()
    placed = cycle(steps)
    (attempt,) = steps.attempts(job_id)
    assert placed == [(attempt.id, "a")]
    assert attempt.status == AttemptStatus.SCHEDULED and attempt.number == 1
    (replica,) = attempt.replicas
    assert replica.status == ReplicaStatus.SCHEDULED and replica.active and replica.container_id is None
    assert replica.container_name == container_name(job_id, 1, 0)
    job = steps.job(job_id)
    assert job.status == JobStatus.SCHEDULED and job.attempt_count == 1 and job.pending_reason is None
    event = steps.events(job_id)[-1]
    assert (event.from_status, event.to_status, event.reason) == (JobStatus.QUEUED, JobStatus.SCHEDULED, "placed on a")
    assert steps.allocations()["a"]["cpus"] == 1.0


def test_a_gang_too_big_for_one_node_spans_two_on_host_networking(steps):
    steps.node("a", cpus=4)
    steps.node("b", cpus=4)
    with steps.session() as session:
        make_project(session, "default", host_network=True)
    job_id = steps.queued_job(replicas=2, resources={"cpus": 3})
    cycle(steps)
    assert sorted(placed_nodes(steps, job_id)) == ["a", "b"]
    assert steps.events(job_id)[-1].reason == "placed on a, b"
    attempt = steps.attempts(job_id)[-1]
    assert attempt.network == "host" and attempt.master_port == RENDEZVOUS_PORTS.start


def test_two_host_network_gangs_hold_different_rendezvous_ports(steps):
    steps.node("a", cpus=8)
    steps.node("b", cpus=8)
    with steps.session() as session:
        make_project(session, "default", host_network=True)
    first = steps.queued_job(replicas=2, resources={"cpus": 3}, network="host")
    second = steps.queued_job(replicas=2, resources={"cpus": 3}, network="host")
    cycle(steps)
    ports = {steps.attempts(j)[-1].master_port for j in (first, second)}
    assert ports == {RENDEZVOUS_PORTS.start, RENDEZVOUS_PORTS.start + 1}


def test_a_gang_without_host_networking_stays_on_one_node(steps):
    steps.node("a", cpus=4)
    steps.node("b", cpus=8)
    job_id = steps.queued_job(replicas=2, resources={"cpus": 3})
    cycle(steps)
    assert placed_nodes(steps, job_id) == ["b", "b"]
    attempt = steps.attempts(job_id)[-1]
    assert attempt.network == "private" and attempt.master_port is None


def test_nothing_is_placed_on_unreachable_or_drained_nodes(steps):
    steps.node("down", status=NodeHealth.UNREACHABLE)
    steps.node("drained", draining=True)
    job_id = steps.queued_job()
    assert cycle(steps) == []
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and job.pending_reason["code"] == INSUFFICIENT_RESOURCES
    steps.node("up")
    cycle(steps)
    assert placed_nodes(steps, job_id) == ["up"]


def test_gpu_memory_keeps_a_job_off_smaller_gpus(steps):
    steps.node("small", gpus=2, gpu_memory_gib=16)
    steps.node("big", gpus=1, gpu_memory_gib=80)
    job_id = steps.queued_job(resources={"gpus": 1, "gpu_memory": "40g"})
    cycle(steps)
    assert placed_nodes(steps, job_id) == ["big"]
    # The big GPU is taken now: a second such job waits, though the small node has two free GPUs.
    second = steps.queued_job(name="second", resources={"gpus": 1, "gpu_memory": "40g"})
    cycle(steps)
    job = steps.job(second)
    assert job.status == JobStatus.QUEUED and steps.attempts(second) == []
    assert "40.0 GiB" in job.pending_reason["message"]


def test_gpu_memory_no_node_has_is_a_clear_wait(steps):
    steps.node("small", gpus=2, gpu_memory_gib=16)
    job_id = steps.queued_job(resources={"gpus": 1, "gpu_memory": "40g"})
    cycle(steps)
    reason = steps.job(job_id).pending_reason
    assert reason["code"] == GPU_MEMORY_UNAVAILABLE and "40.0 GiB" in reason["message"]


def test_a_single_replica_jobs_reason_does_not_speak_of_replicas(steps):
    # Each resource is free somewhere, never together: a has the CPUs, b the memory.
    steps.node("a", cpus=4, memory_gib=2)
    steps.node("b", cpus=1, memory_gib=16)
    single = steps.queued_job(name="single", resources={"cpus": 2, "memory": "4g"})
    gang = steps.queued_job(name="gang", replicas=2, resources={"cpus": 2, "memory": "4g"})
    cycle(steps)
    message = steps.job(single).pending_reason["message"]
    assert "replicas must start together" not in message
    assert "no single node has its CPUs and memory free at once" in message
    assert "its 2 replicas must start together" in steps.job(gang).pending_reason["message"]


def test_an_unchanged_pending_reason_is_not_rewritten(steps):
    steps.node("a", cpus=1)
    job_id = steps.queued_job(resources={"cpus": 2})  # can never fit here: waits each cycle
    cycle(steps)
    version = steps.job(job_id).version
    steps.clock.advance(1)
    cycle(steps)
    assert steps.job(job_id).version == version


def test_a_higher_priority_job_preempts_and_the_victim_is_told_why(steps):
    steps.node("a", cpus=2)
    victim, _, _ = steps.running_job(["a"], name="low", resources={"cpus": 2})
    urgent = steps.queued_job(name="urgent", priority=10, resources={"cpus": 2})
    assert cycle(steps) == []  # nothing placed until the victim has stopped
    job = steps.job(victim)
    assert job.stop_requested == StopRequest.PREEMPTED
    assert job.status_reason.startswith(f"preempted for {urgent}")
    assert job.status == JobStatus.RUNNING  # the stop step signals it; collect requeues it
    reason = steps.job(urgent).pending_reason
    assert reason["code"] == PREEMPTING and reason["details"]["victims"] == [victim]
    # A second cycle while the victim stops asks nothing twice.
    cycle(steps)
    assert steps.job(victim).stop_requested == StopRequest.PREEMPTED


def test_a_job_that_cannot_be_preempted_is_left_alone(steps):
    steps.node("a", cpus=2)
    keeper, _, _ = steps.running_job(["a"], name="keeper", preemptible=False, resources={"cpus": 2})
    steps.queued_job(name="urgent", priority=10, resources={"cpus": 2})
    cycle(steps)
    assert steps.job(keeper).stop_requested is None


def test_an_empty_queue_writes_nothing(steps):
    steps.node("a")
    assert cycle(steps) == []


def test_finished_jobs_feed_the_history(steps):
    steps.node("a")
    with steps.session() as session:
        for i in range(3):
            job = make_job(session, name=f"done{i}", status=JobStatus.SUCCEEDED)
            job.finished_at = steps.clock() - 10 + i
            job.attained_gpu_s = 100.0
    steps.queued_job()
    finished = FinishedJobs()
    with steps.session() as session:
        run_cycle(session, get_policy("default"), steps.clock(), finished)
    assert len(finished.history) == 3


def test_the_cycle_sees_capacity_held_by_scheduled_attempts(steps):
    steps.node("a", cpus=2, memory_gib=4)
    first = steps.queued_job(name="first", resources={"cpus": 2, "memory": "2g"})
    cycle(steps)
    second = steps.queued_job(name="second", resources={"cpus": 2, "memory": "2g"})
    cycle(steps)  # the first holds the node before any container exists
    assert steps.job(first).status == JobStatus.SCHEDULED
    assert steps.job(second).status == JobStatus.QUEUED
    assert steps.allocations()["a"]["memory"] == 2 * GIB


def test_a_cycle_based_on_a_stale_read_writes_nothing(steps):
    """The user stops a queued job while the policy is deciding: the placement's write is refused by the
    version check, so no attempt is left behind, and the next cycle decides on the fresh rows."""
    steps.node("a")
    job_id = steps.queued_job()
    policy = get_policy("default")
    decide = policy.schedule

    def decide_while_the_user_stops(state, queue, now):
        with steps.db.session() as other:
            transition(other, other.get(Job, job_id), JobStatus.STOPPED, "stopped by user before it started")
        return decide(state, queue, now)

    policy.schedule = decide_while_the_user_stops  # type: ignore[method-assign]
    with pytest.raises(StaleStateError), steps.session() as session:
        run_cycle(session, policy, steps.clock())
    assert steps.attempts(job_id) == []
    assert steps.job(job_id).status == JobStatus.STOPPED and steps.allocations() == {}
    assert cycle(steps) == []
