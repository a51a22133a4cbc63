"""The usage step on fake engines (SQLite and PostgreSQL): a sample per running container, on every node
at once; a container that vanished or an engine that fails costs only its own sample; finished replicas'
samples are dropped. The job's detail, the nodes list and /metrics show them."""

from __future__ import annotations

from sqlalchemy import select

from deepdock.api.enums import ReplicaStatus
from deepdock.compute.base import ContainerStats
from deepdock.errors import EngineUnreachableError
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

