"""The node health step: ping every engine at once; a node that does not answer within
``PING_DEADLINE_S`` is unreachable from that moment (the scheduler stops placing there), and one silent
for ``NODE_LOST_AFTER_S`` loses its running attempts. Health never touches an admin's drain."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from sqlalchemy import select

from deepdock.api.enums import AttemptStatus, FailureReason, NodeHealth, ReplicaStatus
from deepdock.compute.base import NodeCapacity
from deepdock.errors import DeepdockError
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import Attempt, Job, Node, Replica
from deepdock.server.services import lifecycle
from deepdock.server.services.attempts import NO_BACKOFF, Outcome, finish_attempt
from deepdock.server.services.nodes import apply_capacity

# A ping is one small request: an engine that takes longer than this is treated as not answering.
PING_DEADLINE_S = 2.0
# A node must stay unreachable this long before its jobs are declared lost (a blip is not a loss).
NODE_LOST_AFTER_S = 10.0
CAPACITY_REFRESH_S = 60.0


def health_lane(node: str) -> str:
    """A lane of its own per node for pings: queued behind that node's starts and collects under load, a
    ping missed its deadline while the engine answered (a false unreachable, and after NODE_LOST_AFTER_S
    false node_lost failures). A node name has no ':', so this never names a node's own lane."""
    return f"{node}:health"


def run(ctx: AppContext, work: Work) -> bool:
    """One round; returns whether anything changed that the scheduler must see."""
    now = ctx.clock()
    with ctx.db.session() as session:
        nodes = list(session.scalars(select(Node)))
        session.expunge_all()
    futures: dict[str, Future[Any] | None] = {}
    for node in nodes:
        stale = node.status != NodeHealth.READY or not node.last_seen_at or now - node.last_seen_at > CAPACITY_REFRESH_S
        futures[node.name] = work.engine.submit(f"ping:{node.name}", _probe_result, ctx, node, stale,
                                                lane=health_lane(node.name))
    work.engine.wait([f for f in futures.values() if f is not None], PING_DEADLINE_S)
    results: dict[str, tuple[bool, str, NodeCapacity | None]] = {}
    for name, future in futures.items():
        if future is None or not future.done():
            # The previous ping is still out, or this one is late: the engine is not answering.
            results[name] = (False, f"engine did not answer a ping within {PING_DEADLINE_S:.0f}s", None)
        else:
            results[name] = future.result()
    changed = False
    with ctx.db.session() as session:
        for node in session.scalars(select(Node)):
            ok, error, capacity = results.get(node.name, (True, "", None))
            if ok:
                changed |= _seen(node, capacity, now)
            else:
                changed |= _unanswered(session, node, error, now)
    if changed:
        ctx.wake_scheduler.set()
    return changed


def _probe_result(ctx: AppContext, node: Node, with_capacity: bool) -> tuple[bool, str, NodeCapacity | None]:
    backend = ctx.backend(node)
    try:
        backend.ping()
        return True, "", backend.capacity() if with_capacity else None
    except DeepdockError as exc:
        return False, exc.message, None


def _seen(node: Node, capacity: NodeCapacity | None, now: float) -> bool:
    changed = node.status != NodeHealth.READY
    if changed:
        log.info("node %s is reachable again", node.name)
    node.status = NodeHealth.READY
    node.unreachable_since = None
    node.last_error = ""
    if capacity is not None:
        apply_capacity(node, capacity)
        node.last_seen_at = now
        changed = True
    return changed


def _unanswered(session, node: Node, error: str, now: float) -> bool:  # type: ignore[no-untyped-def]
    changed = False
    if node.status != NodeHealth.UNREACHABLE:
        log.warning("node %s is unreachable: %s", node.name, error)
        node.status = NodeHealth.UNREACHABLE
        node.unreachable_since = now
        changed = True
    node.last_error = error
    if now - (node.unreachable_since or now) >= NODE_LOST_AFTER_S:
        changed |= fail_attempts_on(session, node, now)
    return changed


def fail_attempts_on(session, node: Node, now: float) -> bool:  # type: ignore[no-untyped-def]
    """End every open attempt with a replica on ``node``: its containers are out of reach."""
    attempt_ids = set(session.scalars(
        select(Replica.attempt_id).where(Replica.node_name == node.name, Replica.active.is_(True))
    ))
    for attempt_id in attempt_ids:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, attempt.job_id)
        if attempt.finished_at is not None or job.status in lifecycle.TERMINAL:
            continue
        for replica in attempt.replicas:
            if replica.node_name == node.name and replica.status != ReplicaStatus.EXITED:
                replica.status = ReplicaStatus.LOST
        outcome = Outcome(AttemptStatus.FAILED,
                          f"node {node.name} unreachable for {NODE_LOST_AFTER_S:.0f}s: {node.last_error}",
                          FailureReason.NODE_LOST)
        finish_attempt(session, job, attempt, outcome, now=now, backoff=NO_BACKOFF)
    return bool(attempt_ids)
