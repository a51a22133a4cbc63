"""The learned GPU-time distribution and the Gittins index the default policy ranks by."""

from __future__ import annotations

import pytest

from deepdock.scheduler import ClusterState, Place, Preempt, Wait, get_policy
from deepdock.scheduler.history import (
    BASE_GPU_S,
    MIN_SAMPLES,
    AttainedHistory,
    attained_bin,
    gittins_table,
    size_class,
)
from deepdock.scheduler.policies.default import STARVE_FACTOR, STARVE_MIN_EXECUTED_S
from deepdock.scheduler.types import Resources
from deepdock.sim.simulator import simulate
from deepdock.sim.trace import TraceJob

from .helpers import GIB, by_job, job, node, occupy, placed_ids, running

LONG = BASE_GPU_S * 2**6  # 3,840 GPU-s: a bin edge, so the expected values below are exact


def _two_point(n: int = 16, gpus: float = 1) -> AttainedHistory:
    """Half the jobs need BASE_GPU_S (60 GPU-s), half need LONG."""
    h = AttainedHistory()
    for _ in range(n):
        h.record(gpus, BASE_GPU_S)
        h.record(gpus, LONG)
    return h


def test_gittins_index_of_a_two_point_distribution() -> None:
    h = _two_point()
    # From 0 the best budget is 60 GPU-s: half finish, each job spends 60 -> 0.5 / 60.
    assert h.index(1, 0) == pytest.approx(1 / 120)
    # Past 60 every survivor needs LONG in total: completion rate 1 / (LONG - a), rising as a grows.
    a = BASE_GPU_S * 2**0.5
    assert attained_bin(100) == attained_bin(a)
    assert h.index(1, 100) == pytest.approx(1 / (LONG - a))
    assert h.index(1, 3_000) > h.index(1, 1_000) > h.index(1, 100)


def test_classes_pool_until_they_have_samples_and_tail_holds_its_last_value() -> None:
    h = _two_point()
    assert size_class(1) == 0 and size_class(4) == 1 and size_class(16) == 2
    # No 2–8 GPU job has finished yet: the pooled distribution (here the 1-GPU one) stands in.
    assert h.index(4, 0) == h.index(1, 0)
    # Beyond every finished job there is nothing to learn from: such jobs tie (and run first come, first
    # served, with no preemption between them) instead of sharing GPUs round-robin as under LAS.
    assert h.index(1, 10 * LONG) == h.index(1, 100 * LONG) > 0
    assert gittins_table([]) == []


def test_empty_or_young_history_falls_back_to_las() -> None:
    queue = [job("old", submit=0, attained_gpu_s=50_000, executed=50_000, last_stop_time=99),
             job("new", submit=50)]
    young = AttainedHistory()
    for _ in range(MIN_SAMPLES - 1):
        young.record(1, 60_000)
    assert not young.ready
    for h in (None, AttainedHistory(), young):
        state = ClusterState([node("n0", gpus=1)], history=h)
        assert placed_ids(get_policy("default").schedule(state, queue, 100)) == ["new"]


def test_default_finishes_a_job_about_to_complete_before_a_younger_one() -> None:
    # LAS would run the younger job (less GPU time); the learned distribution says the older one is
    # almost surely near the end of its LONG run.
    queue = [job("young", submit=0, attained_gpu_s=100, executed=100, last_stop_time=99),
             job("old", submit=50, attained_gpu_s=3_500, executed=3_500, last_stop_time=99)]
    state = ClusterState([node("n0", gpus=1)], history=_two_point())
    assert placed_ids(get_policy("default").schedule(state, queue, 100)) == ["old"]
    assert placed_ids(get_policy("default").schedule(ClusterState([node("n0", gpus=1)]), queue, 100)) == ["young"]


def test_past_every_finished_job_the_furthest_along_runs_first() -> None:
    # Both are beyond everything the history has seen: equal index. The one closer to done (more
    # GPU time) goes first, wherever it sits in submission order.
    h = _two_point()
    queue = [job("early", submit=0, attained_gpu_s=20 * LONG, executed=20 * LONG, last_stop_time=99),
             job("later", submit=50, attained_gpu_s=40 * LONG, executed=40 * LONG, last_stop_time=99)]
    assert h.index(1, 20 * LONG) == h.index(1, 40 * LONG)
    state = ClusterState([node("n0", gpus=1)], history=h)
    assert placed_ids(get_policy("default").schedule(state, queue, 100)) == ["later"]


def test_index_preemption_needs_a_large_ratio() -> None:
    h = _two_point()
    # A fresh job (index 1/120) vs a running one at 100 GPU-s (index ~1/3,755): preempt.
    state = occupy(ClusterState([node("n0", gpus=1)], [running("r", "n0", [0], attained_gpu_s=100)],
                                history=h))
    out = by_job(get_policy("default").schedule(state, [job("q")], 0))
    assert isinstance(out["q"], Preempt) and out["q"].victims == ["r"]
    # Two jobs of about the same index do not trade places.
    state = occupy(ClusterState([node("n0", gpus=1)], [running("r", "n0", [0], attained_gpu_s=200)],
                                history=h))
    q = job("q", attained_gpu_s=150, executed=150, last_stop_time=0)
    assert isinstance(by_job(get_policy("default").schedule(state, [q], 10))["q"], Wait)


def test_low_index_gang_is_promoted_after_waiting() -> None:
    h = _two_point()
    for _ in range(MIN_SAMPLES):
        h.record(8, 8 * 86_400.0)  # gangs of this class run for days: a tiny index
    queue = [job("gang", gpus=8, submit=0), job("small", submit=0)]
    state = ClusterState([node("n0", gpus=8)], history=h)
    assert placed_ids(get_policy("default").schedule(state, queue, 3_600)) == ["small"]
    later = STARVE_FACTOR * STARVE_MIN_EXECUTED_S
    assert placed_ids(get_policy("default").schedule(state, queue, later)) == ["gang"]


def test_simulator_fills_history_with_gpu_time_at_completion() -> None:
    seen: list[list[float]] = []

    class Spy:
        name = "spy"
        preemptive = True

        def __init__(self) -> None:
            self.inner = get_policy("default")

        def schedule(self, state, queue, now, *, explain=True):
            h = state.history
            seen.append(sorted(x for s in h._samples.values() for x in s))
            return self.inner.schedule(state, queue, now, explain=explain)

    jobs = [TraceJob("a", 0, 100, Resources(1, GIB, 2)), TraceJob("b", 0, 300, Resources(1, GIB, 1)),
            TraceJob("c", 500, 10, Resources(1, GIB, 1))]
    nodes = [node("n0", gpus=4)]
    result = simulate(jobs, nodes, Spy())
    assert all(r.end_time is not None for r in result.jobs.values())
    # At c's arrival (t=500), a (2 GPUs × 100 s) and b (1 GPU × 300 s) have finished; durations are never
    # handed to the policy, only what finished jobs attained.
    assert seen[-1] == [200.0, 300.0]
    assert all(isinstance(d, Place) for d in get_policy("default").schedule(
        ClusterState(nodes, history=AttainedHistory()), [job("x")], 0))
