"""The observe step: list each node's containers, then bring replica rows in line with what was seen.

Every node is listed in its own lane at once; the step waits at most ``OBSERVE_DEADLINE_S`` for all of
them, so a slow or frozen engine delays nobody: its replicas are simply not judged this tick. A replica
is declared lost only by a listing that began after its container id was recorded (``recorded_at``): a
listing taken earlier may not show a container the start step created a moment later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from deepdock.api.enums import AttemptStatus, JobStatus, ReplicaStatus, StopRequest
from deepdock.compute.base import LABEL_MANAGED, ContainerState
from deepdock.errors import DeepdockError, EngineUnreachableError
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import Attempt, Job, Node, Replica
from deepdock.server.services import lifecycle
from deepdock.server.services.jobs import job_spec
from deepdock.server.services.nodes import mark_unreachable

# How long one tick waits for the listings; a node slower than this is looked at again next tick.
OBSERVE_DEADLINE_S = 3.0


@dataclass
class Listing:
    began_at: float
    containers: dict[str, ContainerState]


@dataclass
class Observation:
    """What the engines showed this tick: per node that answered, its managed containers by name."""

    nodes: dict[str, Node] = field(default_factory=dict)
    listings: dict[str, Listing] = field(default_factory=dict)

    def container(self, replica: Replica) -> ContainerState | None:
        listing = self.listings.get(replica.node_name)
        return listing.containers.get(replica.container_name) if listing else None

    def seen(self, node: str) -> bool:
        return node in self.listings


def start_key(attempt_id: int) -> str:
    return f"start:{attempt_id}"


def list_nodes(ctx: AppContext, work: Work) -> Observation:
    """I/O only: every reachable node's managed containers, each listing begun and timed in its lane."""
    with ctx.db.session() as session:
        nodes = {n.name: n for n in session.scalars(select(Node))}
        session.expunge_all()
    obs = Observation(nodes=nodes)
    futures = {}
    for node in nodes.values():
        future = work.engine.submit(f"list:{node.name}", _list, ctx, node, lane=node.name)
        if future is not None:
            futures[node.name] = future
    work.engine.wait(futures.values(), OBSERVE_DEADLINE_S)
    for name, future in futures.items():
        if not future.done():
            continue  # still listing: judged next tick
        result = future.result()
        if isinstance(result, Listing):
            obs.listings[name] = result
        elif isinstance(result, EngineUnreachableError):
            mark_unreachable(ctx.db, name, result.message, ctx.clock())
    return obs


def _list(ctx: AppContext, node: Node) -> Listing | DeepdockError:
    began = ctx.clock()
    try:
        containers = ctx.backend(node).list_containers({LABEL_MANAGED: "true"})
    except DeepdockError as exc:
        return exc
    return Listing(began_at=began, containers={c.name.lstrip("/"): c for c in containers})


def run(ctx: AppContext, work: Work) -> Observation:
    """List, then sync: replica states, adoption after a restart, the gang rule and max_runtime."""
    obs = list_nodes(ctx, work)
    in_flight = work.engine.keys()
    now = ctx.clock()
    with ctx.db.session() as session:
        open_attempts = session.scalars(
            select(Attempt).join(Job, Job.id == Attempt.job_id)
            .where(Job.status.in_(lifecycle.ACTIVE), Attempt.finished_at.is_(None))
        ).all()
        for attempt in open_attempts:
            if start_key(attempt.id) in in_flight:
                continue  # the start step owns it until its containers are recorded
            job = session.get(Job, attempt.job_id)
            assert job is not None
            with lifecycle.fenced(f"job {job.id}"):
                _sync_attempt(session, job, attempt, obs, now)
                _check_progress(ctx, job, attempt, now)
                session.flush()
    return obs


def _check_progress(ctx: AppContext, job: Job, attempt: Attempt, now: float) -> None:
    """The opt-in progress timeout: a running attempt none of whose ranks wrote a log line or a metric
    (metrics travel in the log) for ``progress_timeout`` is stopped as failed - the mark of a collective
    that hangs after a peer died, which no exit code ever reports."""
    limit = job_spec(job).progress_timeout
    if not limit or attempt.started_at is None or job.stop_requested is not None:
        return
    last = attempt.started_at
    for replica in attempt.replicas:
        try:
            last = max(last, ctx.logs.path(job.id, attempt.number, replica.rank).stat().st_mtime)
        except OSError:
            continue  # nothing written yet
    if now - last > limit:
        job.stop_requested = StopRequest.STALLED
        job.status_reason = (f"no log line or metric from any rank for {now - last:.0f}s "
                             f"(progress_timeout {limit:g}s)")


def _sync_attempt(session, job: Job, attempt: Attempt, obs: Observation, now: float) -> None:  # type: ignore[no-untyped-def]
    states = [_sync_replica(replica, obs, now) for replica in attempt.replicas]
    ended = [s for s in states if s in (ReplicaStatus.EXITED, ReplicaStatus.LOST)]
    running = [s for s in states if s == ReplicaStatus.RUNNING]
    if ended and running and job.stop_requested is None:
        # A gang runs all together or not at all: one replica ending ends the attempt.
        job.stop_requested = StopRequest.GANG
    if running and len(running) == len(states) and attempt.started_at is None:
        # Running containers found after a restart (the start step's own write never happened).
        attempt.started_at = now
        attempt.status = AttemptStatus.RUNNING
        if job.status != JobStatus.RUNNING:
            lifecycle.transition(session, job, JobStatus.RUNNING, "adopted running containers",
                                 attempt=attempt.number, at=now)
    limit = job_spec(job).max_runtime
    if limit and job.started_at and job.stop_requested is None and now - job.started_at > limit:
        job.stop_requested = StopRequest.RUNTIME
        job.status_reason = f"ran longer than max_runtime {limit:.0f}s"


def _sync_replica(replica: Replica, obs: Observation, now: float) -> ReplicaStatus:
    """Update one replica from the listing of its node; returns its status (unchanged when unseen)."""
    status = ReplicaStatus(replica.status)
    if status in (ReplicaStatus.EXITED, ReplicaStatus.LOST) or not obs.seen(replica.node_name):
        return status
    container = obs.container(replica)
    if container is None:
        began = obs.listings[replica.node_name].began_at
        if replica.container_id is not None and replica.recorded_at is not None and began > replica.recorded_at:
            log.warning("container %s of job %s is gone", replica.container_name, replica.job_id)
            replica.status = ReplicaStatus.LOST
            replica.finished_at = now
            return ReplicaStatus.LOST
        return status
    if replica.container_id is None:
        replica.container_id = container.id  # adopted after a restart
        replica.recorded_at = now
    if container.finished:
        replica.status = ReplicaStatus.EXITED
        replica.exit_code = container.exit_code
        replica.oom_killed = container.oom_killed
        replica.finished_at = container.finished_at or now
        return ReplicaStatus.EXITED
    if status != ReplicaStatus.RUNNING:
        replica.status = ReplicaStatus.RUNNING
        replica.started_at = container.started_at or now
    return ReplicaStatus.RUNNING
