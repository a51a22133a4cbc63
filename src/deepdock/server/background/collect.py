"""The collect step: end the attempts that are over, and remove containers nobody owns any more.

An attempt is over when every replica has exited or is lost, or when its job was asked to stop before all
of its containers were made (and those that were have ended). A collect task keeps the logs and the
artifacts (through the node's FileTransfer ability), removes the containers, then records the outcome
(services/attempts.py decides it).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from deepdock.api.enums import AttemptNetwork, AttemptStatus, ReplicaStatus
from deepdock.compute.abilities import FileTransfer
from deepdock.compute.base import LABEL_JOB, ComputeBackend
from deepdock.compute.workspace import ARTIFACTS_SUBDIR
from deepdock.errors import DeepdockError, NotFoundError
from deepdock.server.background.observe import Observation, start_key
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import Attempt, Job, Node, Replica
from deepdock.server.services import lifecycle
from deepdock.server.services.artifacts import StoredFile, attempt_prefix, store_tree
from deepdock.server.services.attempts import Outcome, finish_attempt, observed_outcome
from deepdock.server.services.checkpoints import checkpoint_folder, store_checkpoints
from deepdock.server.services.distributed import network_name, remove_gang_network
from deepdock.server.services.exports import collect_export, finish_export
from deepdock.server.services.jobs import job_spec
from deepdock.server.services.logs import follow_key
from deepdock.server.services.registry import prepare_from_event, register_prepared
from deepdock.server.services.tracking import ingest_log, model_events

ENDED = (ReplicaStatus.EXITED, ReplicaStatus.LOST)
# How long a collect waits for a follower to write the last of a log before capturing it anew.
FOLLOWER_DRAIN_S = 5.0
NEVER_STARTED = Outcome(AttemptStatus.STOPPED, "stopped before its containers started")


def collect_key(attempt_id: int) -> str:
    return f"collect:{attempt_id}"


def run(ctx: AppContext, work: Work, obs: Observation) -> int:
    in_flight = work.engine.keys()
    with ctx.db.session() as session:
        attempts = session.scalars(
            select(Attempt).join(Job, Job.id == Attempt.job_id)
            .where(Job.status.in_(lifecycle.ACTIVE), Attempt.finished_at.is_(None))
        ).all()
        stopping = set(session.scalars(select(Job.id).where(Job.stop_requested.is_not(None))))
        over = [(a.id, a.replicas[0].node_name) for a in attempts
                if start_key(a.id) not in in_flight and _over(a, a.job_id in stopping)]
    submitted = sum(
        work.engine.submit(collect_key(attempt_id), collect_attempt, ctx, work, attempt_id, obs.nodes,
                           lane=node) is not None
        for attempt_id, node in over
    )
    remove_strays(ctx, work, obs)
    return submitted


def _over(attempt: Attempt, stopping: bool) -> bool:
    if all(r.status in ENDED for r in attempt.replicas):
        return True
    # Stopped before (all of) its containers started: the ones that ran have ended, the rest never will.
    return stopping and all(r.status in ENDED or r.container_id is None for r in attempt.replicas)


def collect_attempt(ctx: AppContext, work: Work, attempt_id: int, nodes: dict[str, Node]) -> None:
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or attempt.finished_at is not None:
            return
        job = session.get(Job, attempt.job_id)
        assert job is not None
        ended = [(r.node_name, r.container_id, r.rank) for r in attempt.replicas
                 if r.status == ReplicaStatus.EXITED and r.container_id]
        lost = [r.rank for r in attempt.replicas if r.status == ReplicaStatus.LOST]
        job_id, number, workdir = job.id, attempt.number, job_spec(job).workdir
        private_on = (attempt.replicas[0].node_name
                      if attempt.network in (AttemptNetwork.PRIVATE, AttemptNetwork.PUBLISHED) else None)
    produced: dict[int, dict[str, StoredFile]] = {}
    models: list[tuple[int, dict[str, object]]] = []
    for node_name, container_id, rank in ended:
        node = nodes.get(node_name)
        if node is None:
            continue
        backend = ctx.backend(node)
        log_path = ctx.logs.path(job_id, number, rank)
        try:
            _keep_logs(ctx, work, backend, container_id, log_path)
            _ingest_all(ctx, log_path, job_id, number, rank)
            store_checkpoints(ctx.db, ctx.artifacts, backend, container_id, job_id, number, rank,
                              checkpoint_folder(workdir), ctx.settings.checkpoints_keep)
            produced[rank] = _keep_artifacts(ctx, backend, container_id, f"{workdir.rstrip('/')}/{ARTIFACTS_SUBDIR}",
                                             attempt_prefix(job_id, number, rank))
            models += [(rank, event) for event in model_events(log_path)]
            backend.remove(container_id)
        except DeepdockError as exc:
            log.warning("collecting %s on %s failed: %s", container_id[:12], node_name, exc.message)
    if private_on is not None and private_on in nodes:  # after its containers: a network in use stays
        remove_gang_network(ctx.backend(nodes[private_on]), private_on, network_name(job_id, number))
    for rank in lost:  # what the follower kept of a vanished container's output
        _ingest_all(ctx, ctx.logs.path(job_id, number, rank), job_id, number, rank)
    registrations = [prepare_from_event(ctx.artifacts, job_id, number, rank, event, produced.get(rank, {}))
                     for rank, event in models]
    exported = collect_export(ctx.db, ctx.artifacts, job_id, produced.get(0, {}))
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, job_id)
        if attempt is None or job is None or attempt.finished_at is not None:
            return
        started = any(r.container_id for r in attempt.replicas)
        finish_attempt(session, job, attempt, observed_outcome(attempt) if started else NEVER_STARTED,
                       now=ctx.clock(), backoff=ctx.backoff)
        for prepared in registrations:
            if prepared is not None:
                register_prepared(session, job, attempt, prepared)
        finish_export(session, exported)
    ctx.wake_scheduler.set()


def _ingest_all(ctx: AppContext, path: Path, job_id: str, number: int, rank: int) -> None:
    """The last of a replica's events, before its attempt is recorded as ended."""
    while True:
        result, _ = ingest_log(ctx.db, path, job_id, number, rank)
        if result.at_end:
            return


def _keep_logs(ctx: AppContext, work: Work, backend: ComputeBackend, container_id: str, path: Path) -> None:
    """The container has exited: let its follower write the rest, or capture the whole log now."""
    follower = work.followers.future(follow_key(container_id))
    if follower is not None:
        work.followers.wait([follower], FOLLOWER_DRAIN_S)
        if follower.done() and path.exists():
            return
    ctx.logs.capture(backend, container_id, path, follow=False)


def _keep_artifacts(ctx: AppContext, backend: ComputeBackend, container_id: str, folder: str,
                    prefix: str) -> dict[str, StoredFile]:
    if not isinstance(backend, FileTransfer):
        return {}  # an engine that cannot copy files out keeps no artifacts (docs/compute.md)
    try:
        archive = backend.copy_out(container_id, folder)
    except NotFoundError:
        return {}  # the job removed its artifacts folder: nothing to keep
    return store_tree(ctx.artifacts, archive, prefix)


def remove_strays(ctx: AppContext, work: Work, obs: Observation) -> None:
    """Containers of jobs this server knows whose replica no longer holds resources: remove them."""
    names = [name for listing in obs.listings.values() for name in listing.containers]
    if not names:
        return
    with ctx.db.session() as session:
        active = set(session.scalars(
            select(Replica.container_name).where(Replica.active.is_(True), Replica.container_name.in_(names))
        ))
        labelled = [c.labels.get(LABEL_JOB, "") for listing in obs.listings.values() for c in listing.containers.values()]
        known_jobs = set(session.scalars(select(Job.id).where(Job.id.in_(labelled))))
    strays: dict[str, list[str]] = defaultdict(list)
    for node_name, listing in obs.listings.items():
        for name, container in listing.containers.items():
            # Only containers of jobs this server knows: another deepdock's containers are not ours to touch.
            if name not in active and container.labels.get(LABEL_JOB) in known_jobs:
                strays[node_name].append(container.id)
    for node_name, ids in strays.items():
        node = obs.nodes[node_name]
        for container_id in ids:
            work.engine.submit(f"remove:{container_id}", _remove, ctx, node, container_id, lane=node_name)


def _remove(ctx: AppContext, node: Node, container_id: str) -> None:
    try:
        ctx.backend(node).remove(container_id)
    except DeepdockError as exc:
        log.warning("removing stray %s on %s failed: %s", container_id[:12], node.name, exc.message)
