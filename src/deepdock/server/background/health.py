"""Node health: ping every engine; a node silent for NODE_LOST_AFTER_S loses its running attempts."""

from __future__ import annotations

from sqlalchemy import select

from deepdock.errors import DeepdockError
from deepdock.server.background.context import LoopContext, log
from deepdock.server.db.models import Attempt, Job, Node, Replica, now_s
from deepdock.server.services import lifecycle
from deepdock.server.services.attempts import OUTCOME_FAILED, finish_attempt
from deepdock.server.services.nodes import NODE_READY, NODE_UNREACHABLE, apply_capacity

# A node must stay unreachable this long before its jobs are declared lost (a blip is not a loss).
NODE_LOST_AFTER_S = 10.0
CAPACITY_REFRESH_S = 60.0


def check_nodes(ctx: LoopContext) -> None:
    with ctx.db.session() as session:
        nodes = list(session.scalars(select(Node)))
        session.expunge_all()
    results: dict[str, tuple[bool, str, object]] = {}
    for node in nodes:
        backend = ctx.pool.get(node)
        try:
            backend.ping()
            capacity = None
            if node.status != NODE_READY or not node.last_seen_at or now_s() - node.last_seen_at > CAPACITY_REFRESH_S:
                capacity = backend.capacity()
            results[node.name] = (True, "", capacity)
        except DeepdockError as exc:
            results[node.name] = (False, exc.message, None)
    changed = False
    now = now_s()
    with ctx.db.session() as session:
        for node in session.scalars(select(Node)):
            ok, error, capacity = results.get(node.name, (True, "", None))
            if ok:
                if node.status == NODE_UNREACHABLE:
                    log.info("node %s is reachable again", node.name)
                    node.status = NODE_READY
                    changed = True
                node.unreachable_since = None
                node.last_error = ""
                if capacity is not None:
                    apply_capacity(node, capacity)  # type: ignore[arg-type]
                    node.last_seen_at = now
                continue
            if node.status != NODE_UNREACHABLE:
                log.warning("node %s is unreachable: %s", node.name, error)
                node.status = NODE_UNREACHABLE
                node.unreachable_since = now
                changed = True
            node.last_error = error
            if now - (node.unreachable_since or now) >= NODE_LOST_AFTER_S:
                changed |= _fail_attempts_on(session, node)
    if changed:
        ctx.wake_scheduler.set()


def _fail_attempts_on(session, node: Node) -> bool:  # type: ignore[no-untyped-def]
    attempt_ids = set(
        session.scalars(
            select(Replica.attempt_id).where(Replica.node_name == node.name, Replica.active.is_(True))
        )
    )
    for attempt_id in attempt_ids:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, attempt.job_id)
        if attempt.finished_at is not None or job.status in lifecycle.TERMINAL:
            continue
        for replica in attempt.replicas:
            if replica.node_name == node.name:
                replica.status = "LOST"
        finish_attempt(
            session, job, attempt, OUTCOME_FAILED,
            f"node {node.name} unreachable for {NODE_LOST_AFTER_S:.0f}s: {node.last_error}",
            code=lifecycle.REASON_NODE_LOST,
        )
    return bool(attempt_ids)
