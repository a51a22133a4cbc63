"""Nodes: Docker engines registered with the server, their capacity and what is allocated on them."""

from __future__ import annotations

import re
from dataclasses import asdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from deepdock.api import NodeOut, NodeUsageSampleOut, UsageOut
from deepdock.api.enums import NodeHealth, NodeStatus
from deepdock.compute.base import NodeCapacity
from deepdock.compute.pool import BackendPool, NodeConnection
from deepdock.errors import ConflictError, DeepdockError, NodeEngineUnreachableError, NotFoundError, SpecError
from deepdock.server.db.models import GpuSample, Node, Replica, User, now_s
from deepdock.server.db.session import Database
from deepdock.server.services.auth import require_admin, visible_project_ids
from deepdock.server.services.distributed import node_address, resolve_address
from deepdock.server.services.gpus import latest_gpu_samples

_NODE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def node_connection(node: Node) -> NodeConnection:
    return NodeConnection(name=node.name, engine_url=node.engine_url, tls_ca=node.tls_ca, tls_cert=node.tls_cert,
                          tls_key=node.tls_key)


def schedulable(node: Node) -> bool:
    """Whether the scheduler may place new replicas there: healthy, and not drained by an admin."""
    return node.status == NodeHealth.READY and not node.draining


def node_out(node: Node, used: dict[str, dict[str, object]]) -> NodeOut:
    u = used.get(node.name, {})
    gpu_used: dict[int, float] = u.get("gpu_used", {})  # type: ignore[assignment]
    holders: dict[int, list[dict[str, object]]] = u.get("gpu_holders", {})  # type: ignore[assignment]
    samples: dict[int, GpuSample] = u.get("gpu_samples", {})  # type: ignore[assignment]
    health = NodeHealth(node.status)
    status = NodeStatus.DRAINING if node.draining and health == NodeHealth.READY else NodeStatus(health.value)
    return NodeOut(
        name=node.name, engine_url=node.engine_url, address=node_address(node), status=status, health=health,
        draining=node.draining,
        cpus=node.cpus, memory=node.memory, labels=dict(node.labels or {}),
        gpus=[{**g, "holders": holders.get(int(g["index"]), []), **_gpu_reading(samples.get(int(g["index"])))}
              for g in node.gpus or []],
        engine_version=node.engine_version, allocated_cpus=float(u.get("cpus", 0.0)),  # type: ignore[arg-type]
        allocated_memory=int(u.get("memory", 0)),  # type: ignore[call-overload]
        allocated_gpus=sum(gpu_used.values()), usage=u.get("usage", []), last_seen_at=node.last_seen_at,
        last_error=node.last_error,
    )


def _gpu_reading(sample: GpuSample | None) -> dict[str, object]:
    if sample is None:
        return {}
    return {"utilization_percent": sample.utilization_percent, "memory_used": sample.memory_used,
            "temperature_c": sample.temperature_c, "power_w": sample.power_w, "sampled_at": sample.at}


def apply_capacity(node: Node, capacity: NodeCapacity) -> None:
    node.cpus = capacity.cpus
    node.memory = capacity.memory
    node.gpus = [asdict(g) for g in capacity.gpus]
    node.engine_version = capacity.engine_version
    node.labels = {**capacity.labels, **(node.labels or {})}


def probe_node(pool: BackendPool, node: Node) -> NodeCapacity:
    """Ask the engine for its capacity. A network call: never inside a DB transaction."""
    backend = pool.get(node_connection(node))
    backend.ping()
    return backend.capacity()


def add_node(
    session_factory,  # type: ignore[no-untyped-def]
    pool: BackendPool,
    actor: User,
    name: str,
    engine_url: str,
    *,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    labels: dict[str, str] | None = None,
    address: str = "",
) -> NodeOut:
    """Register an engine: probe it first (outside any transaction), then store it."""
    require_admin(actor)
    if not _NODE_NAME_RE.match(name):
        raise SpecError(f"node name {name!r} must be 1-63 chars of a-z, 0-9, '_', '.', '-'")
    with session_factory() as session:
        if session.scalar(select(Node).where(Node.name == name)) is not None:
            raise ConflictError(f"node {name!r} already exists")
    node = Node(name=name, engine_url=engine_url, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                labels=labels or {}, address=resolve_address(address, engine_url))
    try:
        capacity = probe_node(pool, node)
    except DeepdockError as exc:
        pool.forget(name)
        # The caller's engine URL (or TLS files): a 422 naming it, not the 503 of a registered engine gone down.
        url = engine_url or "default"
        raise NodeEngineUnreachableError(f"node {name}: engine {url} did not answer: {exc.message}",
                                         details={"engine": url, "reason": exc.message}) from None
    apply_capacity(node, capacity)
    node.status = NodeHealth.READY
    node.draining = False
    node.last_seen_at = now_s()
    with session_factory() as session:
        session.add(node)
        session.flush()
        return node_out(node, {})


def list_nodes(session: Session, viewer: User | None = None, now: float | None = None) -> list[NodeOut]:
    """Every node; a GPU's holders name only the jobs of projects ``viewer`` can see (all without one).
    Each GPU carries its reading of the newest usage round, if that is recent at ``now`` (the clock's)."""
    visible = visible_project_ids(session, viewer) if viewer is not None else None
    used = allocations(session)
    for node_name, by_gpu in gpu_holders(session, visible).items():
        used.setdefault(node_name, {})["gpu_holders"] = by_gpu
    for node_name, by_index in latest_gpu_samples(session, now).items():
        used.setdefault(node_name, {})["gpu_samples"] = by_index
    for node_name, sample in _usage(session, visible):
        used.setdefault(node_name, {}).setdefault("usage", []).append(sample)  # type: ignore[attr-defined]
    return [node_out(n, used) for n in session.scalars(select(Node).order_by(Node.name))]


def node_usage(session: Session, since: float | None = None) -> list[NodeUsageSampleOut]:
    """Per node and usage round, its job containers summed (oldest first), since ``since`` or over the last
    hour. Sums name no job, so every user may read them, as they read the nodes' allocations."""
    from deepdock.server.db.models import UsageSample
    from deepdock.server.services.jobs import USAGE_WINDOW_S

    start = since if since is not None else now_s() - USAGE_WINDOW_S
    rows = session.execute(
        select(UsageSample.node_name, UsageSample.at, func.count(), func.sum(UsageSample.cpu_percent),
               func.sum(UsageSample.memory_usage))
        .where(UsageSample.at > start).group_by(UsageSample.node_name, UsageSample.at)
        .order_by(UsageSample.node_name, UsageSample.at))
    return [NodeUsageSampleOut(node=node, at=at, containers=count, cpu_percent=float(cpu), memory_usage=int(memory))
            for node, at, count, cpu, memory in rows]

def get_node(session: Session, name: str) -> Node:
    node = session.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise NotFoundError(f"no node {name!r}")
    return node


def remove_node(session: Session, pool: BackendPool, actor: User, name: str, *, force: bool = False) -> None:
    """Unregister a node (commits) and close its backend."""
    require_admin(actor)
    node = get_node(session, name)
    busy = session.scalar(
        select(func.count()).select_from(Replica).where(Replica.node_name == name, Replica.active.is_(True))
    )
    if busy and not force:
        raise ConflictError(f"node {name!r} runs {busy} job replica(s); stop them, drain it, or pass force")
    session.delete(node)
    session.commit()
    pool.forget(name)


def set_node_status(session: Session, actor: User, name: str, status: NodeStatus) -> NodeOut:
    """An admin drains a node (no new placements; running replicas go on) or makes it ready again.
    Health is the health step's to set, so 'unreachable' cannot be asked for. Commits."""
    require_admin(actor)
    if status not in (NodeStatus.READY, NodeStatus.DRAINING):
        raise SpecError("a node can be set to 'ready' or 'draining'")
    node = get_node(session, name)
    node.draining = status == NodeStatus.DRAINING
    session.flush()
    out = node_out(node, allocations(session))
    session.commit()
    return out


def _usage(session: Session, visible: list[int] | None) -> list[tuple[str, UsageOut]]:
    from deepdock.server.db.models import Job, ReplicaUsage

    rows = session.execute(select(ReplicaUsage, Job.project_id).join(Job, Job.id == ReplicaUsage.job_id)
                           .order_by(ReplicaUsage.node_name, ReplicaUsage.job_id))
    return [(u.node_name, UsageOut(job=u.job_id if visible is None or project_id in visible else "", node=u.node_name,
                                   cpu_percent=u.cpu_percent, memory_usage=u.memory_usage,
                                   memory_limit=u.memory_limit, at=u.at)) for u, project_id in rows]


def allocations(session: Session) -> dict[str, dict[str, object]]:
    """Per node: cpus, memory and GPU shares held by active replicas (the scheduler's 'used')."""
    from deepdock.server.db.models import Job

    rows = session.execute(
        select(Replica.node_name, Replica.gpu_indices, Replica.gpu_share, Job.cpus, Job.memory, Job.gpus)
        .join(Job, Job.id == Replica.job_id)
        .where(Replica.active.is_(True))
    )
    used: dict[str, dict[str, object]] = {}
    for node_name, gpu_indices, gpu_share, cpus, memory, gpus in rows:
        entry = used.setdefault(node_name, {"cpus": 0.0, "memory": 0, "gpu_used": {}})
        entry["cpus"] = float(entry["cpus"]) + cpus  # type: ignore[arg-type]
        entry["memory"] = int(entry["memory"]) + memory  # type: ignore[call-overload]
        per_gpu: dict[int, float] = entry["gpu_used"]  # type: ignore[assignment]
        for idx in gpu_indices or []:
            per_gpu[idx] = per_gpu.get(idx, 0.0) + _gpu_share(gpus, gpu_share)
    return used


def _gpu_share(gpus: float, gpu_share: float) -> float:
    return gpu_share if gpus < 1 else 1.0


def gpu_holders(session: Session, visible: list[int] | None = None) -> dict[str, dict[int, list[dict[str, object]]]]:
    """Per node and GPU index: the jobs placed on it with their share (the dashboard's GPU map). A job
    outside ``visible`` project ids, when given, is left unnamed. Not part of ``allocations``: the
    scheduler reads that every cycle and needs no names."""
    from deepdock.server.db.models import Job, Project

    rows = session.execute(
        select(Replica.node_name, Replica.gpu_indices, Replica.gpu_share, Job.gpus, Job.id, Job.project_id,
               Project.name)
        .join(Job, Job.id == Replica.job_id).join(Project, Project.id == Job.project_id)
        .where(Replica.active.is_(True), Job.gpus > 0)
    )
    holders: dict[str, dict[int, list[dict[str, object]]]] = {}
    for node_name, gpu_indices, gpu_share, gpus, job_id, project_id, project in rows:
        shown = visible is None or project_id in visible
        for idx in gpu_indices or []:
            holders.setdefault(node_name, {}).setdefault(idx, []).append(
                {"job": job_id if shown else "", "project": project if shown else "",
                 "share": _gpu_share(gpus, gpu_share)})
    return holders


def mark_unreachable(db: Database, name: str, error: str, now: float) -> None:
    """An engine call failed for want of an answer: no placements there from now on (health sets it
    ready again when a ping answers). Its own short transaction: called from engine-call tasks."""
    with db.session() as session:
        node = session.scalar(select(Node).where(Node.name == name))
        if node is None:
            return
        if node.status != NodeHealth.UNREACHABLE:
            node.status = NodeHealth.UNREACHABLE
            node.unreachable_since = now
        node.last_error = error
