"""The level-triggered reconciler: compare replicas in the DB with containers on the engines and act.

Runs every ``reconcile_interval_s`` (or when woken). Each pass is idempotent: it reads both sides, then
makes one change per difference, so a server killed at any point resumes correctly on restart.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from deepdock.compute.base import DEFAULT_WORKDIR, LABEL_JOB, LABEL_MANAGED, ComputeBackend, ContainerState
from deepdock.errors import DeepdockError, NotFoundError
from deepdock.server.background.context import LoopContext, log
from deepdock.server.background.workspace import ARTIFACTS_SUBDIR
from deepdock.server.db.models import Attempt, Job, Node, Replica, now_s
from deepdock.server.services import lifecycle
from deepdock.server.services.attempts import OUTCOME_FAILED, OUTCOME_SUCCEEDED, finish_attempt
from deepdock.server.services.engine_access import docker_client_for, export_dir
from deepdock.server.services.nodes import NODE_UNREACHABLE

EXIT_OOM = 137


def _observe(ctx: LoopContext) -> tuple[dict[str, dict[str, ContainerState]], dict[str, Node]]:
    """Containers per reachable node, by name. Network calls: done before any transaction."""
    with ctx.db.session() as session:
        nodes = {n.name: n for n in session.scalars(select(Node))}
        session.expunge_all()
    observed: dict[str, dict[str, ContainerState]] = {}
    for node in nodes.values():
        if node.status == NODE_UNREACHABLE:
            continue
        try:
            containers = ctx.pool.get(node).list_containers({LABEL_MANAGED: "true"})
        except DeepdockError:
            continue  # the health loop marks the node; its replicas are judged there
        observed[node.name] = {c.name.lstrip("/"): c for c in containers}
    return observed, nodes


def reconcile_once(ctx: LoopContext) -> list[int]:
    """One pass. Returns attempt ids whose containers must be (re)started."""
    observed, nodes = _observe(ctx)
    to_start: list[int] = []
    to_stop: list[tuple[Node, str, float]] = []
    finished_attempts: list[int] = []
    now = now_s()
    with ctx.db.session() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.status.in_(lifecycle.ACTIVE)))}
        attempts: dict[int, Attempt] = {}
        for attempt in session.scalars(
            select(Attempt).where(Attempt.job_id.in_(list(jobs)), Attempt.finished_at.is_(None))
        ):
            attempts[attempt.id] = attempt
        with ctx.lock:
            in_flight = set(ctx.starting)
        for attempt in attempts.values():
            job = jobs[attempt.job_id]
            if attempt.id in in_flight:
                continue
            _check_runtime(job, now)
            states = []
            for replica in attempt.replicas:
                seen = observed.get(replica.node_name)
                if seen is None:
                    states.append(None if replica.node_name not in nodes else "unknown")
                    continue
                container = seen.get(replica.container_name)
                states.append(_sync_replica(ctx, replica, container))
            if job.stop_requested:
                grace = float((job.spec or {}).get("stop_grace") or ctx.settings.stop_grace_s)
                for replica in attempt.replicas:
                    if replica.status == lifecycle.RUNNING and replica.container_id:
                        to_stop.append((nodes[replica.node_name], replica.container_id, grace))
            if any(s == "missing_never_started" for s in states) and all(
                s in ("missing_never_started", "running") for s in states
            ) and job.stop_requested is None:
                to_start.append(attempt.id)
                continue
            if all(s in ("finished", "lost") for s in states):
                finished_attempts.append(attempt.id)
            elif any(s in ("finished", "lost") for s in states) and job.stop_requested is None:
                # A gang is all-or-nothing: one replica ending ends the attempt.
                job.stop_requested = "gang"
            elif all(s == "running" for s in states) and job.status != lifecycle.RUNNING and attempt.started_at is None:
                attempt.started_at = now
                attempt.status = lifecycle.RUNNING
                lifecycle.transition(session, job, lifecycle.RUNNING, "adopted running containers", attempt=attempt.number)
    for node, container_id, grace in to_stop:
        _stop_async(ctx, node, container_id, grace)
    for attempt_id in finished_attempts:
        _complete_attempt(ctx, attempt_id, nodes)
    _clean_strays(ctx, observed, nodes)
    return to_start


def _check_runtime(job: Job, now: float) -> None:
    limit = (job.spec or {}).get("max_runtime")
    if limit and job.started_at and job.stop_requested is None and now - job.started_at > float(limit):
        job.stop_requested = "runtime"
        job.status_reason = f"ran longer than max_runtime {limit:.0f}s"


def _sync_replica(ctx: LoopContext, replica: Replica, container: ContainerState | None) -> str:
    """Update one replica from its container; return 'running', 'finished', 'lost' or 'missing_never_started'."""
    if container is None:
        if replica.container_id is None:
            return "missing_never_started"
        if replica.exit_code is not None or replica.status in ("EXITED", "LOST"):
            return "finished" if replica.status == "EXITED" else "lost"
        replica.status = "LOST"
        return "lost"
    if replica.container_id is None:
        replica.container_id = container.id  # adopted after a restart
    if container.finished:
        if replica.status != "EXITED":
            replica.status = "EXITED"
            replica.exit_code = container.exit_code
            replica.oom_killed = container.oom_killed
            replica.finished_at = container.finished_at or now_s()
        return "finished"
    if replica.status != lifecycle.RUNNING:
        replica.status = lifecycle.RUNNING
        replica.started_at = container.started_at or now_s()
    return "running"


def _stop_async(ctx: LoopContext, node: Node, container_id: str, grace: float) -> None:
    import threading

    with ctx.lock:
        if container_id in ctx.stopping:
            return
        ctx.stopping.add(container_id)

    def _stop() -> None:
        try:
            ctx.pool.get(node).stop(container_id, grace)
        except DeepdockError as exc:
            log.warning("stopping %s on %s failed: %s", container_id[:12], node.name, exc.message)
        finally:
            with ctx.lock:
                ctx.stopping.discard(container_id)
            ctx.wake_reconciler.set()

    threading.Thread(target=_stop, name=f"stop-{container_id[:12]}", daemon=True).start()


def _outcome(attempt: Attempt) -> tuple[str, str, str]:
    """(outcome, reason, failure code) of an attempt whose replicas have all ended."""
    lost = [r for r in attempt.replicas if r.status == "LOST"]
    if lost:
        return OUTCOME_FAILED, f"container of replica {lost[0].rank} disappeared", lifecycle.REASON_CONTAINER_LOST
    oom = [r for r in attempt.replicas if r.oom_killed]
    if oom:
        return OUTCOME_FAILED, f"replica {oom[0].rank} exceeded its memory limit (OOMKilled)", lifecycle.REASON_OOM
    failed = [r for r in attempt.replicas if r.exit_code not in (0, None)]
    if failed:
        return OUTCOME_FAILED, f"replica {failed[0].rank} exited with code {failed[0].exit_code}", lifecycle.REASON_EXIT_CODE
    return OUTCOME_SUCCEEDED, "exit code 0", ""


def _complete_attempt(ctx: LoopContext, attempt_id: int, nodes: dict[str, Node]) -> None:
    """Keep the logs and artifacts, remove the containers, then record the outcome."""
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or attempt.finished_at is not None:
            return
        replicas = [(r.node_name, r.container_id, r.rank, r.status) for r in attempt.replicas]
        job_id, number = attempt.job_id, attempt.number
        job = session.get(Job, job_id)
        workdir = ((job.spec if job else None) or {}).get("workdir") or DEFAULT_WORKDIR
    for node_name, container_id, rank, status in replicas:
        if status != "EXITED" or container_id is None:
            continue
        backend = ctx.pool.get(nodes[node_name])
        try:
            ctx.followers.finish(backend, container_id, ctx.logs.path(job_id, number, rank))
            dest = ctx.artifacts_root / job_id / f"attempt-{number}" / f"rank-{rank}"
            _export_artifacts(nodes[node_name], backend, container_id, workdir, dest)
            backend.remove(container_id)
        except DeepdockError as exc:
            log.warning("collecting %s failed: %s", container_id[:12], exc.message)
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, job_id)
        if attempt is None or job is None or attempt.finished_at is not None:
            return
        outcome, reason, code = _outcome(attempt)
        finish_attempt(session, job, attempt, outcome, reason, code=code)
    ctx.wake_scheduler.set()


def _export_artifacts(node: Node, backend: ComputeBackend, container_id: str, workdir: str, dest: Path) -> None:
    client = docker_client_for(node, backend)
    if client is None:
        return
    try:
        export_dir(client, container_id, f"{workdir.rstrip('/')}/{ARTIFACTS_SUBDIR}", dest)
    except NotFoundError:
        pass  # the job removed its artifacts folder: nothing to keep
    finally:
        client.close()


def _clean_strays(ctx: LoopContext, observed: dict[str, dict[str, ContainerState]], nodes: dict[str, Node]) -> None:
    """Containers whose replica is no longer active (stopped job, lost-then-returned node): stop, remove."""
    names = [name for seen in observed.values() for name in seen]
    if not names:
        return
    with ctx.db.session() as session:
        active = set(
            session.scalars(select(Replica.container_name).where(Replica.active.is_(True), Replica.container_name.in_(names)))
        )
        known_jobs = set(session.scalars(select(Job.id).where(Job.id.in_(
            [c.labels.get(LABEL_JOB, "") for seen in observed.values() for c in seen.values()]
        ))))
    by_node: dict[str, list[ContainerState]] = defaultdict(list)
    for node_name, seen in observed.items():
        for name, container in seen.items():
            # Only containers of jobs this server knows: another deepdock's containers are not ours to touch.
            if name not in active and container.labels.get(LABEL_JOB) in known_jobs:
                by_node[node_name].append(container)
    for node_name, containers in by_node.items():
        backend = ctx.pool.get(nodes[node_name])
        for container in containers:
            try:
                backend.remove(container.id)
            except DeepdockError as exc:
                log.warning("removing stray %s failed: %s", container.name, exc.message)
