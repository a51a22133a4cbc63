"""The track step: live tracking of running replicas.

Each tick, for every running replica: make sure its output is being followed (a restarted server
follows again what was running before it died), ingest the events past its cursor
(services/tracking.py), and when a checkpoint was announced, copy it out in the node's lane
(services/checkpoints.py). The cursor cache spares a database read when a log has not grown.
The collect step does the last ingest and copy of an attempt before it removes the containers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from deepdock.api.enums import CheckpointStatus, ReplicaStatus
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext
from deepdock.server.db.models import Attempt, Checkpoint, Job, Node, Replica
from deepdock.server.services.checkpoints import checkpoint_folder, store_checkpoints
from deepdock.server.services.jobs import job_spec
from deepdock.server.services.logs import follow_key, follow_logs
from deepdock.server.services.tracking import ingest_log


@dataclass(frozen=True)
class Live:
    job_id: str
    attempt: int
    rank: int
    container_id: str
    node: Node
    workdir: str


def copy_task_key(live: Live) -> str:
    """The task key of a replica's checkpoint copy (not a store key: services/checkpoints.checkpoint_key)."""
    return f"checkpoints:{live.job_id}:{live.attempt}:{live.rank}"


class Tracker:
    """The track step with its cache of cursors (replica → offset already stored)."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int, int], int] = {}

    def run(self, ctx: AppContext, work: Work) -> int:
        replicas = running_replicas(ctx)
        seen = set()
        stored = 0
        for live in replicas:
            key = (live.job_id, live.attempt, live.rank)
            seen.add(key)
            backend = ctx.backend(live.node)
            path = ctx.logs.path(live.job_id, live.attempt, live.rank)
            work.followers.submit(follow_key(live.container_id), follow_logs, ctx.logs, backend, live.container_id, path,
                                  lane="")
            first_look = key not in self.offsets
            result, self.offsets[key] = ingest_log(ctx.db, path, *key, known_offset=self.offsets.get(key))
            stored += result.points
            if result.checkpoints or (first_look and _has_pending(ctx, live)):
                submit_checkpoint_copy(ctx, work, live)
        for key in set(self.offsets) - seen:
            del self.offsets[key]
        return stored


def submit_checkpoint_copy(ctx: AppContext, work: Work, live: Live) -> None:
    work.engine.submit(copy_task_key(live), store_checkpoints, ctx.db, ctx.artifacts, ctx.backend(live.node),
                       live.container_id, live.job_id, live.attempt, live.rank, checkpoint_folder(live.workdir),
                       ctx.settings.checkpoints_keep, lane=live.node.name)


def _has_pending(ctx: AppContext, live: Live) -> bool:
    with ctx.db.session() as session:
        return session.scalar(select(Checkpoint.id).where(
            Checkpoint.job_id == live.job_id, Checkpoint.attempt == live.attempt, Checkpoint.rank == live.rank,
            Checkpoint.status == CheckpointStatus.PENDING).limit(1)) is not None


def running_replicas(ctx: AppContext) -> list[Live]:
    with ctx.db.session() as session:
        rows = session.execute(
            select(Replica, Attempt.number, Job)
            .join(Attempt, Attempt.id == Replica.attempt_id).join(Job, Job.id == Replica.job_id)
            .where(Replica.status == ReplicaStatus.RUNNING, Replica.container_id.is_not(None),
                   Attempt.finished_at.is_(None))
        ).all()
        nodes = {n.name: n for n in session.scalars(select(Node))}
        session.expunge_all()
        return [Live(job.id, number, replica.rank, replica.container_id, nodes[replica.node_name], job_spec(job).workdir)
                for replica, number, job in rows if replica.node_name in nodes and replica.container_id]
