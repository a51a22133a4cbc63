"""The usage step on fake engines (SQLite and PostgreSQL): a sample per running container, on every node
at once; a container that vanished or an engine that fails costs only its own sample; finished replicas'
samples are dropped. The job's detail, the nodes list and /metrics show them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from deepdock.api.enums import ReplicaStatus
from deepdock.compute.base import ContainerStats
from deepdock.errors import EngineUnreachableError, NotFoundError
from deepdock.server.cluster_metrics import ClusterCollector
from deepdock.server.db.models import Replica, ReplicaUsage, User
from deepdock.server.services.jobs import describe_job
from deepdock.server.services.nodes import list_nodes

MIB = 1024**2
GIB = 1024**3


def samples(steps) -> dict[str, tuple[float, int]]:  # type: ignore[no-untyped-def]
    with steps.session() as session:
        return {u.node_name + "/" + u.job_id: (u.cpu_percent, u.memory_usage)
                for u in session.scalars(select(ReplicaUsage))}


def test_every_running_container_is_sampled_and_shown(steps):
    steps.node("a")
    steps.node("b")
    job, _, (ca, cb) = steps.running_job(["a", "b"])
    steps.engine("a").set_stats(ca, ContainerStats(cpu_percent=150.0, memory_usage=300 * MIB, memory_limit=GIB, pids=4))
    steps.engine("b").set_stats(cb, ContainerStats(cpu_percent=50.0, memory_usage=100 * MIB, memory_limit=GIB, pids=2))
    assert steps.controller.usage_once() == 2
    assert samples(steps) == {f"a/{job}": (150.0, 300 * MIB), f"b/{job}": (50.0, 100 * MIB)}
    with steps.session() as session:
        admin = session.scalar(select(User).where(User.name == "admin"))
        detail = describe_job(session, admin, job, "/artifacts")
        assert [(u.node, u.cpu_percent) for u in detail.usage] == [("a", 150.0), ("b", 50.0)]
        nodes = {n.name: n for n in list_nodes(session, admin)}
        assert [(u.job, u.memory_usage) for u in nodes["a"].usage] == [(job, 300 * MIB)]
    families = {f.name: f for f in ClusterCollector(steps.db).collect()}
    cpu = {tuple(sorted(s.labels.items())): s.value for s in families["deepdock_job_cpu_percent"].samples}
    assert cpu[(("job", job), ("node", "a"), ("project", "default"))] == 150.0


def test_a_failing_engine_costs_only_its_own_sample_and_ended_replicas_are_dropped(steps):
    steps.node("a")
    steps.node("b")
    job, _, (ca, cb) = steps.running_job(["a", "b"])
    steps.engine("b").fail_next("stats", EngineUnreachableError("engine b did not answer"))
    assert steps.controller.usage_once() == 1
    assert set(samples(steps)) == {f"a/{job}"}
    with steps.session() as session:
        for replica in session.scalars(select(Replica).where(Replica.job_id == job)):
            replica.status, replica.active = ReplicaStatus.EXITED, False
        session.commit()
    assert steps.controller.usage_once() == 0
    assert samples(steps) == {}



def test_every_round_is_kept_as_history_per_rank_and_per_node_and_a_day_old_one_is_dropped(steps):
    from deepdock.server.background.usage import USAGE_KEPT_S
    from deepdock.server.services.jobs import job_usage
    from deepdock.server.services.nodes import node_usage
    from tests.server.factories import make_project, make_user

    steps.node("a")
    steps.node("b")
    job, _, (ca, cb) = steps.running_job(["a", "b"])
    first = steps.clock()
    for cpu in (100.0, 80.0, 60.0):
        steps.engine("a").set_stats(ca, ContainerStats(cpu_percent=cpu, memory_usage=200 * MIB, memory_limit=GIB, pids=1))
        steps.engine("b").set_stats(cb, ContainerStats(cpu_percent=cpu / 2, memory_usage=100 * MIB, memory_limit=GIB,
                                                       pids=1))
        assert steps.controller.usage_once() == 2
        steps.clock.advance(10)
    with steps.session() as session:
        admin = make_user(session)
        history = job_usage(session, admin, job, since=first - 1)
        assert [(u.rank, u.node, u.cpu_percent) for u in history] == [
            (0, "a", 100.0), (1, "b", 50.0), (0, "a", 80.0), (1, "b", 40.0), (0, "a", 60.0), (1, "b", 30.0)]
        assert [u.at for u in history[::2]] == [first, first + 10, first + 20]
        assert [u.cpu_percent for u in job_usage(session, admin, job, since=first + 5) if u.rank == 0] == [80.0, 60.0]
        by_node = [(n.node, n.containers, n.cpu_percent, n.memory_usage) for n in node_usage(session, since=first - 1)]
        assert by_node == [("a", 1, 100.0, 200 * MIB), ("a", 1, 80.0, 200 * MIB), ("a", 1, 60.0, 200 * MIB),
                           ("b", 1, 50.0, 100 * MIB), ("b", 1, 40.0, 100 * MIB), ("b", 1, 30.0, 100 * MIB)]
        outsider = make_user(session, "mallory", is_admin=False)
        make_project(session, "elsewhere", members=[outsider])
        with pytest.raises(NotFoundError):  # another project's job: as if it did not exist
            job_usage(session, outsider, job)
    steps.clock.advance(USAGE_KEPT_S)
    assert steps.controller.usage_once() == 2
    with steps.session() as session:
        assert {u.at for u in job_usage(session, make_user(session), job, since=0)} == {steps.clock()}


def test_gpu_nodes_are_sampled_shown_with_their_holders_and_kept_as_history(steps):
    from deepdock.compute.base import GpuStats
    from deepdock.server.db.models import GpuSample
    from deepdock.server.services.gpus import GPU_SAMPLE_FRESH_S, gpu_usage

    gpu_node = steps.node("g", gpus=2)
    steps.node("c")  # no GPUs: never probed, no rows
    job, _, _ = steps.running_job(["g"], gpu_indices=[[0]], resources={"cpus": 1, "memory": "1g", "gpus": 1})
    gpu_node.set_gpu_stats([GpuStats(0, "GPU-g-0", utilization_percent=88.0, memory_used=30 * GIB,
                                     memory_total=80 * GIB, temperature_c=70.0, power_w=400.0),
                            GpuStats(1, "GPU-g-1", utilization_percent=None, memory_used=None, memory_total=80 * GIB)])
    first = steps.clock()
    assert steps.controller.usage_once() == 1 + 2  # the job's container, then one row per device
    steps.clock.advance(10)
    gpu_node.set_gpu_stats([GpuStats(0, "GPU-g-0", utilization_percent=40.0, memory_used=20 * GIB,
                                     memory_total=80 * GIB)])
    assert steps.controller.usage_once() == 1 + 2
    with steps.session() as session:
        admin = session.scalar(select(User).where(User.name == "admin"))
        gpus = {n.name: n.gpus for n in list_nodes(session, admin, now=steps.clock())}
        assert gpus["c"] == []
        newest, other = gpus["g"]
        assert (newest.utilization_percent, newest.memory_used, newest.sampled_at) == (40.0, 20 * GIB, steps.clock())
        assert [h.job for h in newest.holders] == [job]
        assert (other.utilization_percent, other.memory_used) == (0.0, 0)  # the fake's idle device
        # The job's own view: the device it holds, with its last reading.
        held = describe_job(session, admin, job, "/artifacts", now=steps.clock()).held_gpus
        assert [(g.rank, g.node, g.index, g.utilization_percent, g.memory_used) for g in held] == [
            (0, "g", 0, 40.0, 20 * GIB)]
        history = [(s.node, s.index, s.at, s.utilization_percent, s.memory_total)
                   for s in gpu_usage(session, since=first - 1)]
        assert history == [("g", 0, [first, first + 10], [88.0, 40.0], 80 * GIB),
                           ("g", 1, [first, first + 10], [None, 0.0], 80 * GIB)]
        assert gpu_usage(session, since=first - 1, node="c") == []
        # No sample for a while (the node stopped answering): the map shows no reading rather than a stale one.
        stale = list_nodes(session, admin, now=steps.clock() + GPU_SAMPLE_FRESH_S + 1)
        assert all(g.utilization_percent is None and g.sampled_at is None for n in stale for g in n.gpus)
    families = {f.name: f for f in ClusterCollector(steps.db, clock=steps.clock).collect()}
    utilization = {(s.labels["node"], s.labels["gpu"]): s.value
                   for s in families["deepdock_gpu_utilization_ratio"].samples}
    assert utilization == {("g", "0"): 0.4, ("g", "1"): 0.0}
    holders = [(s.labels["gpu"], s.labels["job"], s.value) for s in families["deepdock_gpu_holder_share"].samples]
    assert holders == [("0", job, 1.0)]
    # A probe that fails costs only that round's GPU rows; the containers are still sampled.
    gpu_node.fail_next("gpu_stats", EngineUnreachableError("engine g did not answer"))
    assert steps.controller.usage_once() == 1
    with steps.session() as session:
        assert session.query(GpuSample).count() == 4


def test_a_long_gpu_history_is_downsampled_per_device_in_sql_keeping_its_peaks(steps):
    from deepdock.errors import SpecError
    from deepdock.server.db.models import GpuSample
    from deepdock.server.services.gpus import gpu_usage

    start = steps.clock()
    with steps.session() as session:
        for i in range(360):  # an hour at 10 s; device 1 spikes once
            for index in (0, 1):
                busy = 100.0 if (index == 1 and i == 200) else 10.0
                session.add(GpuSample(node_name="g", gpu_index=index, uuid=f"GPU-{index}", at=start + 10 * i,
                                      utilization_percent=busy, memory_used=GIB, memory_total=80 * GIB))
        session.commit()
    with steps.session() as session:
        end = start + 3600
        full, spiky = gpu_usage(session, since=end - 3600 - 1, max_points=60, now=end)
        assert [len(full.at), len(spiky.at)] == [60, 60]  # a minute a point: 6 samples each
        assert full.at[0] == start + 50 and full.at[-1] == start + 3590  # each span at its last sample
        assert full.at == sorted(full.at) and set(full.utilization_percent) == {10.0}
        assert spiky.utilization_percent.count(100.0) == 1  # the busy moment a chart is read for is kept
        assert len(gpu_usage(session, since=start - 1)[0].at) == 360
        assert [len(s.at) for s in gpu_usage(session, since=start - 1, max_points=1000, now=end)] == [360, 360]
        with pytest.raises(SpecError, match="max_points"):
            gpu_usage(session, max_points=1)
        with pytest.raises(SpecError, match="since"):
            gpu_usage(session, since=float("nan"))
        # Out-of-range times read as the ends of the history (the spans are integer milliseconds in SQL).
        assert gpu_usage(session, since=float("inf"), max_points=10, now=end) == []
        assert [len(s.at) for s in gpu_usage(session, since=-1e300, max_points=10, now=end)] == [1, 1]  # decades a span
