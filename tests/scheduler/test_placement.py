"""Placement: consolidation, fractional packing, spread, gpu types, no over-commit, can_ever_fit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deepdock.scheduler import POLICIES, Allocator, ClusterState, Place, Resources, can_ever_fit, get_policy

from .helpers import GIB, job, node, occupy, running


def test_multi_gpu_job_consolidates_on_best_fitting_node() -> None:
    # n1 has exactly 4 free GPUs: a 4-GPU job goes there and leaves n0's 8 whole for a bigger job.
    state = occupy(ClusterState([node("n0"), node("n1")], [running("r", "n1", [0, 1, 2, 3])]))
    out = get_policy("fifo-backfill").schedule(state, [job("four", gpus=4), job("eight", gpus=8, submit=1)], 0)
    places = {d.job_id: d for d in out if isinstance(d, Place)}
    assert places["four"].placements[0].node == "n1"
    assert places["eight"].placements[0].node == "n0"


def test_gang_packs_onto_fewest_nodes() -> None:
    alloc = Allocator([node("n0"), node("n1"), node("n2")])
    placed = alloc.place(Resources(1, GIB, 2), 4)
    assert placed is not None and {p.node for p in placed} == {placed[0].node}, "4×2 GPUs fit on one node"
    big = alloc.place(Resources(1, GIB, 8), 2)
    assert big is not None and len({p.node for p in big}) == 2


def test_fractional_requests_share_one_device_best_fit() -> None:
    alloc = Allocator([node("n0", gpus=2)])
    a = alloc.place(Resources(1, GIB, 0.5), 1)
    b = alloc.place(Resources(1, GIB, 0.25), 1)
    c = alloc.place(Resources(1, GIB, 0.25), 1)
    assert a and b and c
    assert a[0].gpu_indices == b[0].gpu_indices == c[0].gpu_indices, "shares pack onto one device"
    assert a[0].gpu_share == 0.5 and b[0].gpu_share == 0.25
    whole = alloc.place(Resources(1, GIB, 1), 1)
    assert whole is not None and whole[0].gpu_indices != a[0].gpu_indices, "the other GPU stayed whole"
    assert alloc.place(Resources(1, GIB, 0.1), 1) is None


def test_spread_puts_replicas_on_distinct_nodes_when_possible() -> None:
    alloc = Allocator([node("n0"), node("n1"), node("n2")])
    placed = alloc.place(Resources(1, GIB, 1), 3, spread=True)
    assert placed is not None and len({p.node for p in placed}) == 3
    packed = Allocator([node("n0"), node("n1"), node("n2")]).place(Resources(1, GIB, 1), 3)
    assert packed is not None and len({p.node for p in packed}) == 1


def test_gpu_type_is_respected_by_allocator() -> None:
    alloc = Allocator([node("a", gpus=4, gpu_type="a100"), node("h", gpus=4, gpu_type="h100")])
    placed = alloc.place(Resources(1, GIB, 2), 1, gpu_type="h100")
    assert placed is not None and placed[0].node == "h"
    assert alloc.place(Resources(1, GIB, 4), 1, gpu_type="h100") is None


def test_cpu_and_memory_limits_are_enforced() -> None:
    alloc = Allocator([node("n0", gpus=0, cpus=4, memory=8 * GIB)])
    assert alloc.place(Resources(3, GIB, 0), 1) is not None
    assert alloc.place(Resources(2, GIB, 0), 1) is None
    assert alloc.place(Resources(1, 8 * GIB, 0), 1) is None


def test_can_ever_fit_messages() -> None:
    nodes = [node("n0", gpus=2), node("n1", gpus=0)]
    assert can_ever_fit(Resources(1, GIB, 2), 1, None, nodes) is None
    assert can_ever_fit(Resources(1, GIB, 4), 1, None, nodes) == "no node has 4 GPUs; the largest has 2"
    assert can_ever_fit(Resources(1, GIB, 4), 1, None, [node("c", gpus=0)]) == \
        "no node has 4 GPUs; the largest has 0"
    assert "type 'h100'" in (can_ever_fit(Resources(1, GIB, 1), 1, "h100", nodes) or "")
    assert can_ever_fit(Resources(128, GIB, 0), 1, None, nodes) == "no node has 128 CPUs; the largest has 64"
    assert "GPUs in all" in (can_ever_fit(Resources(1, GIB, 2), 3, None, nodes) or "")
    # Busy nodes do not matter: the question is about an empty cluster.
    busy = occupy(ClusterState([node("n0", gpus=2)], [running("r", "n0", [0, 1])])).nodes
    assert can_ever_fit(Resources(1, GIB, 2), 1, None, busy) is None


_GPU_CHOICES = st.sampled_from([0, 0.25, 0.5, 1, 2, 4, 8])


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.tuples(_GPU_CHOICES, st.integers(1, 3), st.integers(1, 16), st.integers(0, 5)),
                    min_size=1, max_size=25),
    policy=st.sampled_from(sorted(POLICIES)),
)
def test_no_over_commit_property(shapes: list[tuple[float, int, int, int]], policy: str) -> None:
    nodes = [node("n0", gpus=8, cpus=32), node("n1", gpus=4, cpus=16), node("n2", gpus=0, cpus=8)]
    queue = [job(f"j{i}", gpus=g, replicas=rep, cpus=c, priority=pr, submit=i)
             for i, (g, rep, c, pr) in enumerate(shapes)]
    out = get_policy(policy).schedule(ClusterState(nodes), queue, 0)
    assert len(out) == len(queue)
    cap = {n.name: n for n in nodes}
    cpus = {n: 0.0 for n in cap}
    gpu_use: dict[tuple[str, int], float] = {}
    jobs = {j.id: j for j in queue}
    for d in out:
        if not isinstance(d, Place):
            continue
        j = jobs[d.job_id]
        assert len(d.placements) == j.replicas, "all replicas or none"
        for p in d.placements:
            cpus[p.node] += j.resources.cpus
            for i in p.gpu_indices:
                gpu_use[(p.node, i)] = gpu_use.get((p.node, i), 0) + (j.resources.gpu_share or 1.0)
            assert len(p.gpu_indices) == max(j.resources.whole_gpus, 1 if j.resources.gpus else 0)
    for name, used in cpus.items():
        assert used <= cap[name].cpus + 1e-9
    assert all(v <= 1 + 1e-9 for v in gpu_use.values())


def test_a_one_node_gang_of_gpu_shares_finds_the_node_that_holds_all_of_them() -> None:
    small, big = node("a", gpus=1), node("b", gpus=4)
    # Best fit for one share would be a's single GPU; the gang of four only fits on b.
    assert can_ever_fit(Resources(1, GIB, 0.5), 4, None, [small, big], one_node=True) is None
    alloc = Allocator([small, big])
    placed = alloc.place(Resources(1, GIB, 0.5), 4, one_node=True)
    assert placed is not None and {p.node for p in placed} == {"b"}
    # a has half a GPU left, b two whole ones: the pair goes to b, not stuck behind a.
    alloc = Allocator([node("a", gpus=1), node("b", gpus=2)])
    assert alloc.place(Resources(1, GIB, 0.5), 1) is not None  # takes half of a's GPU (best fit)
    pair = alloc.place(Resources(1, GIB, 0.5), 2, one_node=True)
    assert pair is not None and {p.node for p in pair} == {"b"}


def test_a_one_node_gang_never_splits_and_says_why_it_cannot_run() -> None:
    nodes = [node("a", gpus=4, cpus=8), node("b", gpus=4, cpus=8)]
    assert Allocator(nodes).place(Resources(1, GIB, 2), 4, one_node=True) is None  # 8 GPUs: no one node
    assert Allocator(nodes).place(Resources(1, GIB, 2), 2, one_node=True) is not None
    reason = can_ever_fit(Resources(1, GIB, 2), 4, None, nodes, one_node=True)
    assert reason is not None and "must share one node" in reason
    cpu = [node("a", gpus=0, cpus=4), node("b", gpus=0, cpus=4)]
    placed = Allocator(cpu).place(Resources(3, GIB, 0), 2)
    assert placed is not None and {p.node for p in placed} == {"a", "b"}  # free to span
    assert Allocator(cpu).place(Resources(3, GIB, 0), 2, one_node=True) is None
