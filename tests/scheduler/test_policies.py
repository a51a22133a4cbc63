"""Ordering of each policy, gangs, reservations, backfill, preemption, reasons."""

from __future__ import annotations

import pytest

from deepdock.errors import SpecError
from deepdock.scheduler import POLICIES, ClusterState, Place, Preempt, Wait, get_policy
from deepdock.scheduler.policies.default import RESERVE_AFTER_WAIT_S
from deepdock.scheduler.types import (
    BEHIND_HIGHER_PRIORITY,
    GANG_RESERVATION,
    GPU_TYPE_UNAVAILABLE,
    INSUFFICIENT_RESOURCES,
    PREEMPTING,
)

from .helpers import by_job, job, node, occupy, placed_ids, running


def test_policy_names_and_unknown_policy() -> None:
    assert {"default", "fifo", "fifo-backfill", "sjf", "srtf", "tiresias", "priority"} <= set(POLICIES)
    with pytest.raises(SpecError) as err:
        get_policy("lottery")
    assert "fifo-backfill" in err.value.message and "lottery" in err.value.message


def test_fifo_is_strict_head_of_line() -> None:
    state = ClusterState([node("n0", gpus=4)])
    decisions = by_job(get_policy("fifo").schedule(state, [job("a", 3, submit=0), job("b", 2, submit=1),
                                                           job("c", 1, submit=2)], 0))
    assert isinstance(decisions["a"], Place)
    assert isinstance(decisions["b"], Wait)
    assert isinstance(decisions["c"], Wait), "strict FIFO must not backfill c past b"
    assert decisions["c"].reason.code == BEHIND_HIGHER_PRIORITY
    assert decisions["c"].reason.message == "behind 1 job of higher priority"
    assert decisions["b"].reason.position == 1 and decisions["c"].reason.position == 2


def test_fifo_backfill_fills_around_blocked_head() -> None:
    state = ClusterState([node("n0", gpus=4)])
    out = get_policy("fifo-backfill").schedule(state, [job("a", 3, submit=0), job("b", 2, submit=1),
                                                       job("c", 1, submit=2)], 0)
    assert placed_ids(out) == ["a", "c"]


def test_sjf_and_srtf_order_by_oracle_remaining_time() -> None:
    state = ClusterState([node("n0", gpus=1)])
    queue = [job("long", submit=0, runtime_estimate=100), job("short", submit=1, runtime_estimate=10),
             job("half-done", submit=2, runtime_estimate=100, executed=95)]
    assert placed_ids(get_policy("sjf").schedule(state, queue, 0)) == ["short"]
    assert placed_ids(get_policy("srtf").schedule(state, queue, 0)) == ["half-done"]


def test_srtf_preempts_job_with_more_remaining_time() -> None:
    state = occupy(ClusterState([node("n0", gpus=1)], [
        running("r", "n0", [0], runtime_estimate=1000, executed=10)]))
    out = by_job(get_policy("srtf").schedule(state, [job("q", runtime_estimate=50)], 10))
    assert isinstance(out["q"], Preempt) and out["q"].victims == ["r"]


def test_priority_orders_then_preempts_lower_priority() -> None:
    state = occupy(ClusterState([node("n0", gpus=2)], [
        running("low-old", "n0", [0], priority=0, start_time=0, attained_gpu_s=500),
        running("low-new", "n0", [1], priority=0, start_time=90, attained_gpu_s=10),
    ]))
    queue = [job("hi", priority=5, submit=100), job("mid", priority=1, submit=50)]
    out = by_job(get_policy("priority").schedule(state, queue, 100))
    # "hi" ranks first and takes the cheapest victim: least attained GPU time, most recent start.
    assert isinstance(out["hi"], Preempt) and out["hi"].victims == ["low-new"]
    assert "priority 5" in out["hi"].reason
    assert isinstance(out["mid"], Preempt) and out["mid"].victims == ["low-old"]


def test_non_preemptible_jobs_are_never_victims() -> None:
    state = occupy(ClusterState([node("n0", gpus=1)], [running("r", "n0", [0], preemptible=False)]))
    out = by_job(get_policy("priority").schedule(state, [job("hi", priority=9)], 0))
    assert isinstance(out["hi"], Wait) and out["hi"].reason.code == GANG_RESERVATION


def test_preemption_takes_a_minimal_victim_set() -> None:
    # Two 1-GPU victims are cheap but useless on their own; the 4-GPU job needs node n1 (4 busy GPUs).
    state = occupy(ClusterState([node("n0", gpus=4), node("n1", gpus=4)], [
        running("a", "n0", [0], start_time=5, attained_gpu_s=1),
        running("b", "n1", [0, 1, 2, 3], start_time=0, attained_gpu_s=100),
    ]))
    out = by_job(get_policy("priority").schedule(state, [job("hi", gpus=4, priority=1)], 10))
    assert isinstance(out["hi"], Preempt) and out["hi"].victims in (["a"], ["b"])
    assert out["hi"].victims == ["a"], "freeing n0 (one cheap victim) suffices"


def test_stopping_victims_give_preempting_reason() -> None:
    state = occupy(ClusterState([node("n0", gpus=1)], [running("r", "n0", [0], stopping=True)]))
    out = by_job(get_policy("priority").schedule(state, [job("hi", priority=3)], 0))
    assert isinstance(out["hi"], Wait) and out["hi"].reason.code == PREEMPTING


def test_gang_is_all_or_nothing() -> None:
    state = ClusterState([node("n0", gpus=8), node("n1", gpus=8)])
    out = by_job(get_policy("fifo-backfill").schedule(state, [job("gang", gpus=8, replicas=3)], 0))
    assert isinstance(out["gang"], Wait) and out["gang"].reason.code == INSUFFICIENT_RESOURCES
    out = by_job(get_policy("fifo-backfill").schedule(state, [job("gang", gpus=8, replicas=2)], 0))
    assert isinstance(out["gang"], Place)
    assert sorted(p.node for p in out["gang"].placements) == ["n0", "n1"]


def test_two_gangs_never_hold_parts_of_each_others_needs() -> None:
    # 16 GPUs; two gangs of 12 each: one starts whole, the other waits holding nothing.
    state = ClusterState([node("n0", gpus=8), node("n1", gpus=8)])
    queue = [job("g1", gpus=4, replicas=3, submit=0), job("g2", gpus=4, replicas=3, submit=0)]
    for name in POLICIES:
        out = by_job(get_policy(name).schedule(state, queue, 0))
        placed = [d for d in out.values() if isinstance(d, Place)]
        assert len(placed) == 1 and len(placed[0].placements) == 3, name
        assert isinstance(out["g2"], Wait), name


def test_reservation_stops_small_jobs_starving_a_gang() -> None:
    # n0 is busy (one GPU), n1 is idle. The 2-node gang cannot start; with a reservation the small job
    # may not take n1, otherwise a stream of small jobs would keep the gang waiting forever.
    state = occupy(ClusterState([node("n0", gpus=8), node("n1", gpus=8)], [
        running("r", "n0", [0], priority=5, preemptible=False)]))
    queue = [job("gang", gpus=8, replicas=2, submit=0), job("small", gpus=1, submit=1)]
    # The default policy reserves once the gang has waited RESERVE_AFTER_WAIT_S; until then it backfills.
    assert placed_ids(get_policy("default").schedule(state, queue, 10)) == ["small"]
    out = by_job(get_policy("default").schedule(state, queue, RESERVE_AFTER_WAIT_S))
    assert isinstance(out["gang"], Wait) and out["gang"].reason.code == GANG_RESERVATION
    assert set(out["gang"].reason.details["nodes"]) == {"n0", "n1"}
    assert isinstance(out["small"], Wait) and out["small"].reason.code == GANG_RESERVATION
    # Without reservations (first-fit backfill) the small job always jumps in and delays the gang.
    assert placed_ids(get_policy("fifo-backfill").schedule(state, queue, RESERVE_AFTER_WAIT_S)) == ["small"]


def test_easy_backfill_only_when_it_ends_before_the_shadow_time() -> None:
    state = occupy(ClusterState([node("n0", gpus=8), node("n1", gpus=8)], [
        running("r", "n0", [0], priority=5, preemptible=False, runtime_estimate=100, executed=0)]))
    queue = [job("gang", gpus=8, replicas=2, submit=0, runtime_estimate=500),
             job("short", gpus=1, submit=1, runtime_estimate=50),
             job("long", gpus=1, submit=2, runtime_estimate=5000)]
    out = by_job(get_policy("priority").schedule(state, queue, 0))
    assert isinstance(out["short"], Place), "ends at 50, before the reserved start at 100"
    assert isinstance(out["long"], Wait), "would delay the reserved gang"


def test_gpu_type_respected_and_explained() -> None:
    state = ClusterState([node("a", gpus=2, gpu_type="a100"), node("h", gpus=2, gpu_type="h100")])
    out = by_job(get_policy("default").schedule(state, [
        job("want-h", gpus=2, gpu_type="h100"), job("want-v", gpus=1, gpu_type="v100")], 0))
    assert isinstance(out["want-h"], Place) and out["want-h"].placements[0].node == "h"
    assert out["want-v"].reason.code == GPU_TYPE_UNAVAILABLE


def test_insufficient_resources_message_names_the_resource() -> None:
    state = occupy(ClusterState([node("n0", gpus=4)], [
        running("r", "n0", [0, 1], priority=9, preemptible=False)]))
    out = by_job(get_policy("fifo-backfill").schedule(state, [job("q", gpus=4)], 0))
    assert out["q"].reason.code == INSUFFICIENT_RESOURCES
    assert out["q"].reason.message == "no node has 4 free GPUs; the most free on one node is 2"


def test_single_replica_reason_is_not_gang_wording() -> None:
    # GPUs are free on "a" but its CPUs are taken; CPUs are free on "b", which has no GPUs.
    state = occupy(ClusterState([node("a", gpus=4, cpus=8), node("b", gpus=0, cpus=64)], [
        running("cpu-hog", "a", [], cpus=8, priority=9, preemptible=False)]))
    out = by_job(get_policy("fifo-backfill").schedule(state, [job("one", gpus=1, cpus=4)], 0))
    reason = out["one"].reason
    assert reason.code == INSUFFICIENT_RESOURCES
    assert "replicas" not in reason.message and "together" in reason.message
    assert reason.message == ("no single node has its GPUs, CPUs and memory free at once: each is free "
                              "somewhere, but not together on one node")


def test_gang_reason_keeps_gang_wording() -> None:
    state = occupy(ClusterState([node("n0", gpus=2), node("n1", gpus=2)], [
        running("r", "n1", [0], priority=9, preemptible=False)]))
    out = by_job(get_policy("fifo-backfill").schedule(state, [job("gang", gpus=2, replicas=2)], 0))
    assert out["gang"].reason.message == \
        "its 2 replicas must start together and the free capacity cannot hold all of them"


def test_every_job_gets_one_decision_and_positions_are_dense() -> None:
    state = ClusterState([node("n0", gpus=2)])
    queue = [job(f"j{i}", gpus=1, submit=i) for i in range(6)]
    for name in POLICIES:
        out = get_policy(name).schedule(state, queue, 0)
        assert sorted(d.job_id for d in out) == sorted(j.id for j in queue), name
        waits = [d for d in out if isinstance(d, Wait)]
        assert sorted(w.reason.position for w in waits) == list(range(1, len(waits) + 1)), name


def test_decisions_are_deterministic() -> None:
    state = ClusterState([node("n0", gpus=4), node("n1", gpus=4)])
    queue = [job(f"j{i}", gpus=(i % 3) + 1, submit=i // 2) for i in range(10)]
    for name in POLICIES:
        a = get_policy(name).schedule(state, queue, 5)
        b = get_policy(name).schedule(state, list(reversed(queue)), 5)
        assert a == b, name
