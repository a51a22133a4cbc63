"""``gpu_memory``: a GPU with less memory than the request is never chosen (placement, preemption,
reservations, can_ever_fit, pending reasons)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deepdock.scheduler import (
    GPU,
    POLICIES,
    Allocator,
    ClusterState,
    NodeState,
    Place,
    Preempt,
    Resources,
    Wait,
    can_ever_fit,
    fits_now,
    get_policy,
)
from deepdock.scheduler.types import GANG_RESERVATION, GPU_MEMORY_UNAVAILABLE, INSUFFICIENT_RESOURCES

from .helpers import GIB, by_job, job, occupy, placed_ids, running


def mixed(name: str, sizes_gib: list[int], gpu_type: str = "gpu", cpus: float = 64) -> NodeState:
    """A node whose GPUs have the given memory sizes (GiB), in index order."""
    return NodeState(name, cpus, 512 * GIB, [GPU(i, gpu_type, s * GIB) for i, s in enumerate(sizes_gib)])


def test_placement_skips_gpus_below_the_floor() -> None:
    alloc = Allocator([mixed("small", [24] * 8), mixed("big", [80] * 2)])
    placed = alloc.place(Resources(1, GIB, 1), 1, gpu_memory=40 * GIB)
    assert placed is not None and placed[0].node == "big"
    # Without a floor the small node serves as well (here: the only one with 8 GPUs).
    assert Allocator([mixed("small", [24] * 8), mixed("big", [80] * 2)]).place(Resources(1, GIB, 8), 1)[0].node == "small"
    assert alloc.place(Resources(1, GIB, 2), 1, gpu_memory=40 * GIB) is None, "one big GPU is left"
    assert alloc.place(Resources(1, GIB, 1), 1, gpu_memory=40 * GIB)[0].node == "big"
    assert alloc.place(Resources(1, GIB, 1), 1, gpu_memory=40 * GIB) is None
    assert alloc.place(Resources(1, GIB, 1), 1) is not None, "the small GPUs still serve requests without a floor"


def test_floor_picks_the_large_devices_of_a_mixed_node() -> None:
    alloc = Allocator([mixed("n0", [24, 80, 24, 80])])
    placed = alloc.place(Resources(1, GIB, 2), 1, gpu_memory=48 * GIB)
    assert placed is not None and sorted(placed[0].gpu_indices) == [1, 3]
    assert alloc.max_whole_free(None, 48 * GIB) == 0
    assert alloc.max_whole_free(None) == 2


def test_fractional_share_only_on_large_devices() -> None:
    alloc = Allocator([mixed("n0", [24, 80])])
    a = alloc.place(Resources(1, GIB, 0.5), 1)  # best fit: the first whole device, the small one
    b = alloc.place(Resources(1, GIB, 0.25), 1, gpu_memory=40 * GIB)
    assert a is not None and b is not None
    assert b[0].gpu_indices == [1], "the half-used small GPU is not large enough"
    c = alloc.place(Resources(1, GIB, 0.5), 1, gpu_memory=40 * GIB)
    assert c is not None and c[0].gpu_indices == [1], "packs onto the shared large device"
    assert alloc.place(Resources(1, GIB, 0.5), 1, gpu_memory=40 * GIB) is None
    assert alloc.largest_free_share(None, 40 * GIB) == 0.25


def test_a_floor_every_gpu_meets_changes_nothing() -> None:
    nodes = [mixed("n0", [80] * 4), mixed("n1", [80] * 8)]
    with_floor = Allocator(nodes).place(Resources(1, GIB, 2), 3, gpu_memory=16 * GIB)
    without = Allocator(nodes).place(Resources(1, GIB, 2), 3)
    assert with_floor == without


def test_gang_with_floor_uses_only_large_gpus() -> None:
    nodes = [mixed("s0", [24] * 8), mixed("b0", [80] * 4), mixed("b1", [80] * 4)]
    placed = Allocator(nodes).place(Resources(1, GIB, 4), 2, gpu_memory=40 * GIB)
    assert placed is not None and sorted(p.node for p in placed) == ["b0", "b1"]
    assert fits_now(Resources(1, GIB, 4), 2, None, nodes, gpu_memory=40 * GIB)
    assert not fits_now(Resources(1, GIB, 4), 3, None, nodes, gpu_memory=40 * GIB)


def test_can_ever_fit_rejects_what_no_gpu_could_hold() -> None:
    nodes = [mixed("s0", [24] * 8), mixed("s1", [24] * 8)]
    assert can_ever_fit(Resources(1, GIB, 1), 1, None, nodes, gpu_memory=40 * GIB) == \
        "needs GPUs with at least 40.0 GiB; the largest here have 24.0 GiB"
    assert can_ever_fit(Resources(1, GIB, 1), 1, None, nodes, gpu_memory=24 * GIB) is None
    typed = [mixed("a", [80] * 2, gpu_type="a100"), mixed("t", [16] * 4, gpu_type="t4")]
    assert can_ever_fit(Resources(1, GIB, 1), 1, "t4", typed, gpu_memory=40 * GIB) == \
        "needs t4 GPUs with at least 40.0 GiB; the largest t4 GPUs here have 16.0 GiB"
    assert can_ever_fit(Resources(1, GIB, 1), 1, None, typed, gpu_memory=40 * GIB) is None


def test_can_ever_fit_counts_only_large_gpus() -> None:
    nodes = [mixed("n0", [24, 24, 80, 80]), mixed("n1", [80, 80])]
    assert can_ever_fit(Resources(1, GIB, 4), 1, None, nodes, gpu_memory=40 * GIB) == \
        "no node has 4 GPUs with at least 40.0 GiB; the most on one node is 2"
    assert can_ever_fit(Resources(1, GIB, 2), 2, None, nodes, gpu_memory=40 * GIB) is None
    assert can_ever_fit(Resources(1, GIB, 2), 3, None, nodes, gpu_memory=40 * GIB) == \
        "the job needs 6 GPUs with at least 40.0 GiB in all; the cluster has 4"
    assert can_ever_fit(Resources(1, GIB, 0), 1, None, nodes, gpu_memory=40 * GIB) == \
        "a GPU memory requirement needs GPUs; the job asks for none"


def test_policy_never_places_on_small_gpus_and_explains() -> None:
    state = ClusterState([mixed("small", [24] * 4), mixed("big", [80] * 1)])
    queue = [job("first", gpus=1, submit=0, gpu_memory=40 * GIB), job("second", gpus=1, submit=1, gpu_memory=40 * GIB),
             job("plain", gpus=1, submit=2)]
    for name in POLICIES:
        out = by_job(get_policy(name).schedule(state, queue, 0))
        assert isinstance(out["first"], Place) and out["first"].placements[0].node == "big", name
        second = out["second"]
        assert isinstance(second, Wait), name
        if name == "fifo":
            assert isinstance(out["plain"], Wait), "strict: nothing starts behind the blocked head"
            continue
        assert isinstance(out["plain"], Place) and out["plain"].placements[0].node == "small", name
        if second.reason.code == GANG_RESERVATION:
            assert second.reason.details["nodes"] == ["big"], "only a node with large GPUs is earmarked"
            continue
        assert second.reason.code == INSUFFICIENT_RESOURCES, name
        assert second.reason.message == \
            "no node has 1 free GPUs with at least 40.0 GiB; the most free on one node is 0", name


def test_reason_when_no_schedulable_node_has_large_gpus() -> None:
    big = mixed("big", [80] * 2)
    big.schedulable = False
    state = ClusterState([mixed("small", [24] * 4), big])
    out = by_job(get_policy("fifo-backfill").schedule(state, [job("q", gpus=2, gpu_memory=40 * GIB)], 0))
    assert out["q"].reason.code == GPU_MEMORY_UNAVAILABLE
    assert out["q"].reason.message == \
        "no schedulable node has 2 GPUs with at least 40.0 GiB (the most on one node is 0)"


def test_a_failed_floor_does_not_block_smaller_requests_in_the_cycle() -> None:
    # The cycle caches shapes that failed; a request without the floor is not "at least as hard".
    state = ClusterState([mixed("small", [24] * 2)])
    queue = [job("floor", gpus=1, submit=0, gpu_memory=40 * GIB), job("plain", gpus=1, submit=1)]
    for name in POLICIES:
        if name == "fifo":
            continue  # strict head-of-line: nothing starts behind the blocked head
        assert placed_ids(get_policy(name).schedule(state, queue, 0, explain=False)) == ["plain"], name
        assert placed_ids(get_policy(name).schedule(state, queue, 0)) == ["plain"], name


def test_preemption_takes_a_victim_on_a_large_gpu() -> None:
    # The cheapest victim (least attained GPU time) sits on a small GPU; only the big one helps.
    state = occupy(ClusterState([mixed("small", [24]), mixed("big", [80])], [
        running("cheap", "small", [0], priority=0, attained_gpu_s=1),
        running("costly", "big", [0], priority=0, attained_gpu_s=1_000),
    ]))
    out = by_job(get_policy("priority").schedule(state, [job("hi", gpus=1, priority=5, gpu_memory=40 * GIB)], 0))
    assert isinstance(out["hi"], Preempt) and out["hi"].victims == ["costly"]


def test_reservation_earmarks_only_nodes_with_large_gpus() -> None:
    state = occupy(ClusterState([mixed("small", [24] * 4), mixed("big", [80] * 4)], [
        running("r", "big", [0, 1], priority=9, preemptible=False)]))
    queue = [job("gang", gpus=4, submit=0, priority=1, gpu_memory=40 * GIB), job("later", gpus=2, submit=1)]
    out = by_job(get_policy("priority").schedule(state, queue, 0))
    assert isinstance(out["gang"], Wait) and out["gang"].reason.details.get("nodes") == ["big"]
    assert isinstance(out["later"], Place) and out["later"].placements[0].node == "small"


_SIZES = st.sampled_from([16, 24, 40, 80])
_FLOORS = st.sampled_from([None, 20, 32, 48, 80, 96])
_GPUS = st.sampled_from([0.25, 0.5, 1, 2, 4])


@settings(max_examples=60, deadline=None)
@given(
    node_sizes=st.lists(st.lists(_SIZES, min_size=1, max_size=8), min_size=1, max_size=4),
    shapes=st.lists(st.tuples(_GPUS, st.integers(1, 3), _FLOORS, st.integers(0, 3)), min_size=1, max_size=20),
    policy=st.sampled_from(sorted(POLICIES)),
)
def test_no_gpu_below_the_floor_and_no_over_commit_property(
    node_sizes: list[list[int]], shapes: list[tuple[float, int, int | None, int]], policy: str
) -> None:
    nodes = [mixed(f"n{i}", sizes) for i, sizes in enumerate(node_sizes)]
    queue = [job(f"j{i}", gpus=g, replicas=rep, priority=pr, submit=i,
                 gpu_memory=None if floor is None else floor * GIB)
             for i, (g, rep, floor, pr) in enumerate(shapes)]
    out = get_policy(policy).schedule(ClusterState(nodes), queue, 0)
    assert len(out) == len(queue)
    by_name = {n.name: n for n in nodes}
    jobs = {j.id: j for j in queue}
    use: dict[tuple[str, int], float] = {}
    for d in out:
        if not isinstance(d, Place):
            continue
        j = jobs[d.job_id]
        assert len(d.placements) == j.replicas
        for p in d.placements:
            for i in p.gpu_indices:
                assert j.gpu_memory is None or by_name[p.node].gpus[i].memory >= j.gpu_memory
                use[(p.node, i)] = use.get((p.node, i), 0) + (j.resources.gpu_share or 1.0)
    assert all(v <= 1 + 1e-9 for v in use.values())
    # Whatever can_ever_fit rejects is never placed.
    for d in out:
        if isinstance(d, Place):
            j = jobs[d.job_id]
            assert can_ever_fit(j.resources, j.replicas, None, nodes, gpu_memory=j.gpu_memory) is None
