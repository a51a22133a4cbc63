"""Nodes: Docker engines registered with the server, their capacity and what is allocated on them."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from deepdock.compute.base import ComputeBackend, NodeCapacity
from deepdock.errors import ConflictError, DeepdockError, EngineError, NotFoundError, SpecError
from deepdock.server.db.models import Node, Replica, User, now_s
from deepdock.server.services.auth import require_admin

NODE_READY = "ready"
NODE_UNREACHABLE = "unreachable"
NODE_DRAINING = "draining"
_NODE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

BackendFactory = Callable[[Node], ComputeBackend]


def docker_backend_for(node: Node) -> ComputeBackend:
    from deepdock.compute.docker import DockerBackend, TlsConfig

    tls = None
    if node.tls_ca or node.tls_cert or node.tls_key:
        tls = TlsConfig(ca=node.tls_ca, cert=node.tls_cert, key=node.tls_key)
    return DockerBackend(node.engine_url, tls=tls)


class BackendPool:
    """One long-lived backend per node (connections are reused); rebuilt when a node's engine changes."""

    def __init__(self, factory: BackendFactory = docker_backend_for) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._backends: dict[str, tuple[str, ComputeBackend]] = {}

    def get(self, node: Node) -> ComputeBackend:
        key = f"{node.engine_url}|{node.tls_ca}|{node.tls_cert}|{node.tls_key}"
        with self._lock:
            cached = self._backends.get(node.name)
            if cached is not None and cached[0] == key:
                return cached[1]
            backend = self._factory(node)
            if cached is not None:
                cached[1].close()
            self._backends[node.name] = (key, backend)
            return backend

    def forget(self, name: str) -> None:
        with self._lock:
            cached = self._backends.pop(name, None)
        if cached is not None:
            cached[1].close()

    def close(self) -> None:
        with self._lock:
            backends, self._backends = self._backends, {}
        for _, backend in backends.values():
            backend.close()


def apply_capacity(node: Node, capacity: NodeCapacity) -> None:
    node.cpus = capacity.cpus
    node.memory = capacity.memory
    node.gpus = [asdict(g) for g in capacity.gpus]
    node.engine_version = capacity.engine_version
    node.labels = {**capacity.labels, **(node.labels or {})}


def probe_node(pool: BackendPool, node: Node) -> NodeCapacity:
    """Ask the engine for its capacity. A network call: never inside a DB transaction."""
    backend = pool.get(node)
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
) -> Node:
    """Register an engine: probe it first (outside any transaction), then store it."""
    require_admin(actor)
    if not _NODE_NAME_RE.match(name):
        raise SpecError(f"node name {name!r} must be 1-63 chars of a-z, 0-9, '_', '.', '-'")
    with session_factory() as session:
        if session.scalar(select(Node).where(Node.name == name)) is not None:
            raise ConflictError(f"node {name!r} already exists")
    node = Node(name=name, engine_url=engine_url, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                labels=labels or {})
    try:
        capacity = probe_node(pool, node)
    except DeepdockError as exc:
        pool.forget(name)
        raise EngineError(f"node {name}: engine {engine_url or 'default'} did not answer: {exc.message}") from None
    apply_capacity(node, capacity)
    node.status = NODE_READY
    node.last_seen_at = now_s()
    with session_factory() as session:
        session.add(node)
    return node


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.name)))


def get_node(session: Session, name: str) -> Node:
    node = session.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise NotFoundError(f"no node {name!r}")
    return node


def remove_node(session: Session, actor: User, name: str, *, force: bool = False) -> None:
    require_admin(actor)
    node = get_node(session, name)
    busy = session.scalar(
        select(func.count()).select_from(Replica).where(Replica.node_name == name, Replica.active.is_(True))
    )
    if busy and not force:
        raise ConflictError(f"node {name!r} runs {busy} job replica(s); stop them, drain it, or pass force")
    session.delete(node)


def set_node_status(session: Session, actor: User, name: str, status: str) -> Node:
    require_admin(actor)
    if status not in (NODE_READY, NODE_DRAINING):
        raise SpecError("a node can be set to 'ready' or 'draining'")
    node = get_node(session, name)
    node.status = status
    return node


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
        share = gpu_share if gpus < 1 else 1.0
        for idx in gpu_indices or []:
            per_gpu[idx] = per_gpu.get(idx, 0.0) + share
    return used
