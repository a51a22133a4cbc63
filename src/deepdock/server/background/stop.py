"""The stop step: signal the running containers of every job whose stop was asked for.

A stop task first looks at the container: one that has already exited is left alone (it ended on its own,
and its exit code decides the outcome). Otherwise the replica's ``stop_sent_at`` is written before
SIGTERM goes out, so an exit after the signal is known to be the stop's (services/attempts.py).
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select

from deepdock.api.enums import ReplicaStatus, StopRequest
from deepdock.errors import DeepdockError
from deepdock.server.background.observe import Observation
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import Job, Node, Replica
from deepdock.server.services import lifecycle
from deepdock.server.services.jobs import job_spec


def stop_key(container_id: str) -> str:
    return f"stop:{container_id}"


# The grace a broken gang's remaining ranks get between SIGTERM and SIGKILL.
BROKEN_GANG_GRACE_S = 3.0


def run(ctx: AppContext, work: Work, obs: Observation) -> int:
    """Submit a stop task per running container of a stopping job; returns how many were submitted."""
    with ctx.db.session() as session:
        rows = session.execute(
            select(Replica.id, Replica.node_name, Replica.container_id, Job.id)
            .join(Job, Job.id == Replica.job_id)
            .where(Job.stop_requested.is_not(None), Replica.active.is_(True),
                   Replica.status == ReplicaStatus.RUNNING, Replica.container_id.is_not(None),
                   Replica.stop_sent_at.is_(None))
        ).all()
        graces = {job_id: _grace(ctx, session.get(Job, job_id), _gang_broken(session, job_id))
                  for job_id in {r[3] for r in rows}}
    submitted = 0
    for replica_id, node_name, container_id, job_id in rows:
        node = obs.nodes.get(node_name)
        if node is None or container_id is None:
            continue
        if work.engine.submit(stop_key(container_id), stop_container, ctx, node, replica_id, container_id,
                              graces[job_id], lane=node_name) is not None:
            submitted += 1
    return submitted


def _gang_broken(session, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether a rank of the job's open attempt failed (exited non-zero, was OOM-killed, or vanished)."""
    return session.scalar(
        select(Replica.id).where(Replica.job_id == job_id, Replica.active.is_(True), or_(
            Replica.status == ReplicaStatus.LOST,
            and_(Replica.status == ReplicaStatus.EXITED, Replica.exit_code != 0)))
        .limit(1)) is not None


def _grace(ctx: AppContext, job: Job | None, broken: bool = False) -> float:
    grace = job_spec(job).stop_grace if job is not None else None
    grace = ctx.settings.stop_grace_s if grace is None else grace
    if job is not None and (job.stop_requested == StopRequest.STALLED
                            or (job.stop_requested == StopRequest.GANG and broken)):
        # The gang is broken (a rank failed, or a collective hangs): the others cannot finish a step, and a
        # rank blocked in a collective never reads its SIGTERM flag, so a long grace only delays the retry.
        # What resumes the gang is its last periodic checkpoint. (A rank that finished cleanly first
        # leaves the others their full grace to finish too.)
        return min(grace, BROKEN_GANG_GRACE_S)
    return grace


def stop_container(ctx: AppContext, node: Node, replica_id: int, container_id: str, grace_s: float) -> None:
    backend = ctx.backend(node)
    try:
        if backend.inspect(container_id).finished:
            return  # it ended on its own before the signal: the observe step records its exit
    except DeepdockError as exc:
        log.warning("stopping %s on %s: %s", container_id[:12], node.name, exc.message)
        return
    with ctx.db.session() as session:
        replica = session.get(Replica, replica_id)
        if replica is None or not replica.active or replica.stop_sent_at is not None:
            return
        replica.stop_sent_at = ctx.clock()
        with lifecycle.fenced(f"replica {replica.rank} of job {replica.job_id}"):
            session.flush()
    try:
        backend.stop(container_id, grace_s)
    except DeepdockError as exc:
        log.warning("stopping %s on %s failed: %s", container_id[:12], node.name, exc.message)
        _unmark(ctx, replica_id)  # not signalled after all: the next tick tries again
    finally:
        ctx.wake_reconciler.set()


def _unmark(ctx: AppContext, replica_id: int) -> None:
    with ctx.db.session() as session:
        replica = session.get(Replica, replica_id)
        if replica is not None and replica.status == ReplicaStatus.RUNNING:
            replica.stop_sent_at = None
            with lifecycle.fenced(f"replica {replica.rank} of job {replica.job_id}"):
                session.flush()
