"""Quotas (borrow and reclaim), DRF ordering, default policy's LAS and starvation protection."""

from __future__ import annotations

from deepdock.scheduler import ClusterState, Preempt, Resources, Wait, get_policy
from deepdock.scheduler.types import QUOTA_EXHAUSTED

from .helpers import GIB, by_job, job, node, occupy, placed_ids, running


def test_idle_capacity_is_borrowed_beyond_quota() -> None:
    quotas = {"a": Resources(64, 512 * GIB, 2), "b": Resources(64, 512 * GIB, 2)}
    state = ClusterState([node("n0", gpus=4)], quotas=quotas)
    out = get_policy("default").schedule(state, [job("a1", gpus=4, project="a")], 0)
    assert placed_ids(out) == ["a1"], "b's share is idle, so a may borrow it"


def test_owner_reclaims_its_guarantee_by_preemption() -> None:
    quotas = {"a": Resources(64, 512 * GIB, 2), "b": Resources(64, 512 * GIB, 2)}
    state = occupy(ClusterState([node("n0", gpus=4)], [
        running("a1", "n0", [0, 1], project="a", attained_gpu_s=10),
        running("a2", "n0", [2, 3], project="a", attained_gpu_s=99),
    ], quotas=quotas))
    # Same priority, and b's job has no attained-GPU-time advantage large enough: only the quota entitles it.
    out = by_job(get_policy("priority").schedule(state, [job("b1", gpus=2, project="b")], 0))
    assert isinstance(out["b1"], Preempt) and out["b1"].victims == ["a1"]


def test_no_reclaim_from_a_project_within_its_guarantee() -> None:
    quotas = {"a": Resources(64, 512 * GIB, 4), "b": Resources(64, 512 * GIB, 0)}
    state = occupy(ClusterState([node("n0", gpus=4)], [
        running("a1", "n0", [0, 1, 2, 3], project="a")], quotas=quotas))
    out = by_job(get_policy("priority").schedule(state, [job("b1", gpus=1, project="b")], 0))
    assert isinstance(out["b1"], Wait) and out["b1"].reason.code == QUOTA_EXHAUSTED
    assert "project 'b'" in out["b1"].reason.message


def test_drf_orders_projects_by_dominant_share() -> None:
    # Project "heavy" already uses half the GPUs; the light project's job goes first although later.
    state = occupy(ClusterState([node("n0", gpus=4)], [
        running("h0", "n0", [0, 1], project="heavy", preemptible=False)]))
    queue = [job("heavy-2", gpus=2, project="heavy", submit=0), job("light-1", gpus=2, project="light", submit=5)]
    assert placed_ids(get_policy("default").schedule(state, queue, 10)) == ["light-1"]


def test_default_prefers_least_attained_gpu_time() -> None:
    state = ClusterState([node("n0", gpus=1)])
    queue = [job("old", submit=0, attained_gpu_s=50_000, executed=50_000, last_stop_time=99),
             job("new", submit=50)]
    assert placed_ids(get_policy("default").schedule(state, queue, 100)) == ["new"]


def test_default_preempts_only_across_a_gpu_time_gap() -> None:
    state = occupy(ClusterState([node("n0", gpus=1)], [running("r", "n0", [0], attained_gpu_s=100)]))
    out = by_job(get_policy("default").schedule(state, [job("q")], 0))
    assert isinstance(out["q"], Wait), "both have little GPU time: no churn"
    state = occupy(ClusterState([node("n0", gpus=1)], [running("r", "n0", [0], attained_gpu_s=100_000)]))
    out = by_job(get_policy("default").schedule(state, [job("q")], 0))
    assert isinstance(out["q"], Preempt) and out["q"].victims == ["r"]


def test_starving_job_is_promoted() -> None:
    state = ClusterState([node("n0", gpus=1)])
    starved = job("starved", submit=0, attained_gpu_s=100_000, executed=100, last_stop_time=0)
    fresh = job("fresh", submit=500)
    # Tiresias promotes after waiting 10× the executed time (1,000 s here), the default after 20×.
    assert placed_ids(get_policy("tiresias").schedule(state, [starved, fresh], 900)) == ["fresh"]
    assert placed_ids(get_policy("tiresias").schedule(state, [starved, fresh], 1_000)) == ["starved"]
    assert placed_ids(get_policy("default").schedule(state, [starved, fresh], 1_900)) == ["fresh"]
    assert placed_ids(get_policy("default").schedule(state, [starved, fresh], 2_000)) == ["starved"]


def test_tiresias_uses_discrete_queues_fifo_within() -> None:
    state = ClusterState([node("n0", gpus=1)])
    # Both below the first threshold: same queue, so submission order decides (unlike continuous LAS).
    queue = [job("early", submit=0, attained_gpu_s=3_000, executed=3_000, last_stop_time=9_000),
             job("late", submit=10, attained_gpu_s=0)]
    assert placed_ids(get_policy("tiresias").schedule(state, queue, 10_000)) == ["early"]
    assert isinstance(by_job(get_policy("tiresias").schedule(state, queue, 10_000))["late"], Wait)
