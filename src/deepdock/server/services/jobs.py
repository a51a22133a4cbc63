"""Jobs: submit, list, describe, stop. ``verb_noun(session, ...)`` functions (dstack's convention) that
own the ORM → api conversion; a function that changes state commits, so the router can wake the loops."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, bindparam, func, select
from sqlalchemy.orm import Session

from deepdock.api import (
    AttemptOut,
    EventOut,
    JobDetail,
    JobGpuOut,
    JobOut,
    PendingReason,
    ReplicaOut,
    UsageOut,
    UsageSampleOut,
)
from deepdock.api.enums import AttemptNetwork, AttemptStatus, JobStatus, NodeHealth, ReplicaStatus, StopRequest
from deepdock.errors import NotFoundError, PermissionDeniedError, SpecError, UnschedulableError
from deepdock.scheduler.cohort import COHORT_GAP_S
from deepdock.scheduler.types import GPU, NodeState, Resources
from deepdock.server.db.models import (
    Attempt,
    CodeBlob,
    Job,
    JobEvent,
    Membership,
    Node,
    Project,
    Replica,
    ReplicaUsage,
    UsageSample,
    User,
    now_s,
)
from deepdock.server.db.session import Database
from deepdock.server.services import lifecycle
from deepdock.server.services.auth import project_for_submit, visible_project_ids
from deepdock.specs.job import JobSpec

# Any row shape: the listing passes a Select of (id, created_at), others of whole rows.
SelectT = TypeVar("SelectT", bound=Select)  # type: ignore[type-arg]
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
# A stop that meets a concurrent background write re-reads the job and tries again this often.
STOP_ATTEMPTS = 5


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def job_spec(job: Job) -> JobSpec:
    """The stored spec, parsed once per loaded row: the only way server code reads a job's spec.

    The columns beside it (cpus, memory, gpus, replicas, gpu_type, priority, preemptible) are copies
    made once at submit (``_spec_columns``) for indexes and SQL, and never written again."""
    cached: JobSpec | None = job.__dict__.get("_parsed_spec")
    if cached is None:
        cached = JobSpec.model_validate(job.spec)
        job.__dict__["_parsed_spec"] = cached
    return cached


def _spec_columns(spec: JobSpec) -> dict[str, Any]:
    r = spec.resources
    return {"name": spec.name, "image": spec.image, "priority": spec.priority, "replicas": spec.replicas,
            "cpus": r.cpus, "memory": r.memory, "gpus": r.gpus, "gpu_type": r.gpu_type,
            "preemptible": spec.preemptible, "retries_left": spec.retry.max_retries}

def node_states_for_capacity(nodes: list[Node]) -> list[NodeState]:
    """Nodes as the scheduler sees them when empty: used to reject what could never fit."""
    return [
        NodeState(
            name=n.name,
            cpus=n.cpus,
            memory=n.memory,
            gpus=[GPU(index=g["index"], type=g.get("model", ""), memory=g.get("memory", 0)) for g in n.gpus or []],
            labels=dict(n.labels or {}),
            free_cpus=n.cpus,
            free_memory=n.memory,
        )
        for n in nodes
    ]


def _cohort(session: Session, project: Project, user: User, spec: JobSpec, job_id: str, now: float) -> str:
    """The spec's named cohort, or the cohort of this user's previous job of the same shape in the project
    if it was submitted at most COHORT_GAP_S ago (the rule of ``scheduler.cohort.CohortTracker``), or a
    new one named after this job."""
    if spec.cohort is not None:
        return f"{project.name}/{spec.cohort}"
    r = spec.resources
    gpu_type = Job.gpu_type.is_(None) if r.gpu_type is None else Job.gpu_type == r.gpu_type
    previous = session.scalar(
        select(Job.cohort)
        .where(Job.project_id == project.id, Job.created_at >= now - COHORT_GAP_S, Job.user_id == user.id,
               Job.cpus == r.cpus, Job.memory == r.memory, Job.gpus == r.gpus, Job.replicas == spec.replicas,
               gpu_type)
        .order_by(Job.created_at.desc())
        .limit(1)
    )
    return previous or job_id


def submit_job(session: Session, user: User, spec: JobSpec, *, code_sha256: str | None = None,
               server_home: Path | None = None, commit: bool = True, spread_group: str | None = None,
               serving: bool = False) -> JobOut:
    """Validate against the cluster (a request no node could ever hold is refused now) and the
    project's host-path grants (``server_home`` is never mountable), store, commit.

    ``serving``: a service's replica, made by the rollout step - the only kind of job that may publish
    ports. A published port sits on a network the node can reach, so a user's own job with one would
    reach the node's services; a replica runs deepdock's model server and nothing of the user's."""
    from deepdock.scheduler import can_ever_fit
    from deepdock.server.services.distributed import one_node_only
    from deepdock.server.services.host_access import check_mounts, protected_paths

    if spec.ports and not serving:
        raise SpecError("ports are published only for a service's replicas (deepdock serve), not for jobs",
                        details={"field": "ports"})
    project = project_for_submit(session, user, spec.project)
    if code_sha256 is not None and session.get(CodeBlob, code_sha256) is None:
        raise SpecError(f"code package {code_sha256[:12]} was not uploaded to this server")
    all_nodes = list(session.scalars(select(Node)))
    check_mounts(session, project, spec, protected_paths(server_home or Path.home() / ".deepdock", all_nodes))
    nodes = [n for n in all_nodes if n.status != NodeHealth.UNREACHABLE or n.cpus > 0]
    if not nodes:
        raise UnschedulableError("no nodes are registered; add one with `deepdock node add`")
    if spec.network == "host" and not project.host_network:
        raise SpecError(f"project {project.name!r} may not use host networking (network: host); an admin "
                        f"grants it with `deepdock project allow-host-network {project.name}`",
                        details={"field": "network", "project": project.name})
    r = spec.resources
    problem = can_ever_fit(
        Resources(cpus=r.cpus, memory=r.memory, gpus=r.gpus), spec.replicas, r.gpu_type, node_states_for_capacity(nodes),
        gpu_memory=r.gpu_memory, one_node=one_node_only(spec, project.host_network),
    )
    if problem is not None:
        if problem.endswith("would fit across nodes"):
            problem += (f" with host networking: an admin's grant (`deepdock project allow-host-network "
                        f"{project.name}`) and network: auto" if spec.network != "host" else "")
        raise UnschedulableError(problem)
    job_id, submitted = new_job_id(), now_s()
    job = Job(
        id=job_id,
        project_id=project.id,
        user_id=user.id,
        spec=spec.model_dump(mode="json"),
        code_sha256=code_sha256,
        status=JobStatus.QUEUED,
        cohort=_cohort(session, project, user, spec, job_id, submitted),
        submitted_at=submitted,
        created_at=submitted,
        spread_group=spread_group,
        **_spec_columns(spec),
    )
    session.add(job)
    session.add(JobEvent(job_id=job.id, from_status=None, to_status=JobStatus.QUEUED, reason="submitted", at=submitted))
    session.flush()
    out = job_out(job)
    if commit:
        session.commit()
    return out


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id, name=job.name, project=job.project.name, user=job.user.name, status=JobStatus(job.status),
        status_reason=job.status_reason, image=job.image, priority=job.priority, replicas=job.replicas,
        cpus=job.cpus, memory=job.memory, gpus=job.gpus, attempts=job.attempt_count, retries_left=job.retries_left,
        pending_reason=PendingReason.model_validate(job.pending_reason) if job.pending_reason else None,
        stop_requested=StopRequest(job.stop_requested) if job.stop_requested else None, submitted_at=job.submitted_at,
        started_at=job.started_at, finished_at=job.finished_at, retry_at=job.retry_at,
    )


def _rank_address(attempt: Attempt, replica: Replica, nodes: dict[str, Node]) -> str:
    from deepdock.server.services.distributed import node_address

    if attempt.network == AttemptNetwork.HOST:
        node = nodes.get(replica.node_name)
        return node_address(node) if node is not None else ""
    return replica.container_name if attempt.network == AttemptNetwork.PRIVATE else ""


# A usage history read without ``since`` covers this much (the charts' default window).
USAGE_WINDOW_S = 3600.0


def job_usage(session: Session, user: User, ref: str, since: float | None = None) -> list[UsageSampleOut]:
    """The job's container samples (oldest first, every rank), since ``since`` or over the last hour."""
    job = get_job(session, user, ref)
    start = since if since is not None else now_s() - USAGE_WINDOW_S
    rows = session.scalars(select(UsageSample).where(UsageSample.job_id == job.id, UsageSample.at > start)
                           .order_by(UsageSample.at, UsageSample.rank))
    return [UsageSampleOut(at=r.at, rank=r.rank, node=r.node_name, cpu_percent=r.cpu_percent,
                           memory_usage=r.memory_usage, memory_limit=r.memory_limit) for r in rows]

def describe_job(session: Session, user: User, ref: str, artifacts_location: str,
                 now: float | None = None) -> JobDetail:
    """The job with its attempts, history, usage and held GPUs (readings recent at ``now``, the clock's)."""
    job = get_job(session, user, ref)
    nodes = {n.name: n for n in session.scalars(select(Node))}
    attempts = [
        AttemptOut(
            number=a.number, status=AttemptStatus(a.status), reason=a.reason, created_at=a.created_at, started_at=a.started_at,
            finished_at=a.finished_at, network=AttemptNetwork(a.network or AttemptNetwork.NONE), master_port=a.master_port,
            replicas=[
                ReplicaOut(rank=r.rank, node=r.node_name, gpu_indices=list(r.gpu_indices or []), gpu_share=r.gpu_share,
                           address=_rank_address(a, r, nodes),
                           container_name=r.container_name, container_id=r.container_id,
                           status=ReplicaStatus(r.status),
                           exit_code=r.exit_code, oom_killed=r.oom_killed, started_at=r.started_at,
                           finished_at=r.finished_at)
                for r in a.replicas
            ],
        )
        for a in session.scalars(select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.number))
    ]
    events = [
        EventOut(at=e.at, attempt=e.attempt, from_status=JobStatus(e.from_status) if e.from_status else None,
                 to_status=JobStatus(e.to_status), reason=e.reason)
        for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))
    ]
    usage = [UsageOut(job=u.job_id, node=u.node_name, cpu_percent=u.cpu_percent, memory_usage=u.memory_usage,
                      memory_limit=u.memory_limit, at=u.at)
             for u in session.scalars(select(ReplicaUsage).where(ReplicaUsage.job_id == job.id)
                                      .order_by(ReplicaUsage.replica_id))]
    return JobDetail(**job_out(job).model_dump(), cohort=job.cohort, attained_service=job.attained_gpu_s,
                     spec=job.spec, events=events, attempt_list=attempts,
                     artifacts_dir=f"{artifacts_location.rstrip('/')}/{job.id}", code_sha256=job.code_sha256,
                     rerun_of=job.rerun_of, usage=usage, held_gpus=_held_gpus(session, job, now))


def _held_gpus(session: Session, job: Job, now: float | None) -> list[JobGpuOut]:
    """The GPUs the job's active replicas hold, with each device's last reading."""
    from deepdock.server.services.gpus import latest_gpu_samples

    held = [(r.rank, r.node_name, index) for r in session.scalars(
        select(Replica).where(Replica.job_id == job.id, Replica.active.is_(True)).order_by(Replica.rank))
        for index in r.gpu_indices or []]
    if not held:
        return []
    readings = latest_gpu_samples(session, now)
    out = []
    for rank, node, index in held:
        sample = readings.get(node, {}).get(index)
        out.append(JobGpuOut(rank=rank, node=node, index=index) if sample is None else JobGpuOut(
            rank=rank, node=node, index=index, utilization_percent=sample.utilization_percent,
            memory_used=sample.memory_used, memory_total=sample.memory_total, sampled_at=sample.at))
    return out


def _visible(session: Session, user: User, query: SelectT) -> SelectT:
    visible = visible_project_ids(session, user)
    return query if visible is None else query.where(Job.project_id.in_(visible))


def get_job(session: Session, user: User, ref: str) -> Job:
    """A job by id, or the newest visible job with that name."""
    job = session.get(Job, ref)
    if job is not None:
        visible = visible_project_ids(session, user)
        if visible is not None and job.project_id not in visible:
            raise NotFoundError(f"no job {ref!r}")  # do not reveal other projects' jobs
        return job
    query = _visible(session, user, select(Job).where(Job.name == ref).order_by(Job.created_at.desc()).limit(1))
    job = session.scalar(query)
    if job is None:
        raise NotFoundError(f"no job {ref!r}")
    return job


# Built once: constructing a select() per call costs more than running it (~200 µs vs ~90 µs here).
_STATUS_BY_ID = select(Job.id, Job.status, Job.status_reason, Job.pending_reason, Job.project_id).where(
    Job.id == bindparam("ref")
)
_MEMBERSHIP = select(Membership.project_id).where(
    Membership.user_id == bindparam("user_id"), Membership.project_id == bindparam("project_id")
)


def job_status(conn: Connection, user: User, ref: str) -> dict[str, object] | None:
    """Status of a job by id on a plain connection (the hot polling path: no ORM session, no object
    load). None when the id is unknown or not visible: the caller falls back to ``get_job``, which
    resolves names and raises the proper 404."""
    row = conn.execute(_STATUS_BY_ID, {"ref": ref}).first()
    if row is None:
        return None
    if not user.is_admin and conn.execute(_MEMBERSHIP, {"user_id": user.id, "project_id": row[4]}).first() is None:
        return None
    return {"id": row[0], "status": row[1], "status_reason": row[2], "pending_reason": row[3]}


def read_status(db: Database, user: User, ref: str) -> dict[str, object]:
    """The polled status: the plain-connection read by id, else by name (or the 404) through the ORM."""
    with db.engine.connect() as conn:
        found = job_status(conn, user, ref)
    if found is not None:
        return found
    with db.session() as session:
        job = get_job(session, user, ref)
        return {"id": job.id, "status": job.status, "status_reason": job.status_reason,
                "pending_reason": job.pending_reason}


def list_jobs(
    session: Session,
    user: User,
    *,
    status: list[str] | None = None,
    project: str | None = None,
    name: str | None = None,
    owner: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
    before: float | None = None,
) -> list[dict[str, Any]]:
    """Newest first, as JobOut-shaped dicts; ``before`` (a created_at) pages backwards without OFFSET."""
    if status:
        valid = [s.value for s in JobStatus]
        unknown = set(status) - set(valid)
        if unknown:
            raise SpecError(f"unknown status {sorted(unknown)}; valid: {', '.join(valid)}")
    limit = max(1, min(limit, MAX_LIST_LIMIT))
    keys = _visible(session, user, select(Job.id, Job.created_at))
    if project:
        keys = keys.where(Job.project_id == select(Project.id).where(Project.name == project).scalar_subquery())
    if name:
        keys = keys.where(Job.name == name)
    if owner:  # the user who submitted them
        keys = keys.where(Job.user_id == select(User.id).where(User.name == owner).scalar_subquery())
    if before is not None:
        keys = keys.where(Job.created_at < before)
    # One index range scan per status, each already in created_at order, merged here: a single
    # `status IN (...) ORDER BY created_at` makes SQLite read every matching row and sort them
    # (9 ms for two statuses over 10,000 jobs, against well under 1 ms this way).
    newest: list[Any] = []
    statuses: list[str | None] = [*status] if status else [None]
    for one in statuses:
        query = keys if one is None else keys.where(Job.status == one)
        newest.extend(session.execute(query.order_by(Job.created_at.desc()).limit(limit)).all())
    newest.sort(key=lambda row: row[1], reverse=True)
    ids = [row[0] for row in newest[:limit]]
    if not ids:
        return []
    # Plain rows, not ORM objects: building 100 Job objects with their joined project and user cost
    # ~5 ms of a ~6 ms listing; the rows are exactly the API's JobOut fields.
    result = session.execute(_LISTING.where(Job.id.in_(ids)).order_by(Job.created_at.desc()))
    columns = list(result.keys())
    return [dict(zip(columns, row, strict=True)) for row in result]


_LISTING = (
    select(
        Job.id, Job.name, Project.name.label("project"), User.name.label("user"), Job.status, Job.status_reason,
        Job.image, Job.priority, Job.replicas, Job.cpus, Job.memory, Job.gpus, Job.attempt_count.label("attempts"),
        Job.retries_left, Job.pending_reason, Job.stop_requested, Job.submitted_at, Job.started_at, Job.finished_at,
        Job.retry_at,
    )
    .join(Project, Project.id == Job.project_id)
    .join(User, User.id == Job.user_id)
)


def count_jobs_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())  # type: ignore[arg-type]


def stop_job(session: Session, user: User, ref: str) -> JobOut:
    """Ask for a stop: a queued job stops now; a placed one is signalled by the stop step. Commits."""
    for attempt in range(STOP_ATTEMPTS):
        try:
            job = get_job(session, user, ref)
            if job.user_id != user.id and not user.is_admin:
                visible = visible_project_ids(session, user)
                if visible is not None and job.project_id not in visible:
                    raise PermissionDeniedError("you cannot stop this job")
            if job.status == JobStatus.QUEUED:
                lifecycle.transition(session, job, JobStatus.STOPPED, "stopped by user before it started")
            elif job.status not in lifecycle.TERMINAL and job.stop_requested != StopRequest.USER:
                job.stop_requested = StopRequest.USER
                job.updated_at = now_s()
                with lifecycle.fenced(f"job {job.id}"):
                    session.flush()
            out = job_out(job)
            session.commit()
            return out
        except lifecycle.StaleStateError:
            # A background step moved the job between our read and our write: read it again.
            session.rollback()
            if attempt == STOP_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def rerun_job(session: Session, user: User, ref: str, *, server_home: Path | None = None) -> JobOut:
    """Submit the job again exactly as it ran: its recorded spec, its code package, and the image tag
    its environment resolved to (not the environment again: a new resolution could pick newer wheels)."""
    job = get_job(session, user, ref)
    spec = job_spec(job)
    if job.image and spec.environment is not None:
        spec = JobSpec.model_validate({**spec.model_dump(mode="json"), "environment": None, "image": job.image})
    elif spec.environment is not None:
        raise SpecError(f"job {job.id} never started, so it has no image to re-run with; submit it again instead")
    original = job.id
    out = submit_job(session, user, spec, code_sha256=job.code_sha256, server_home=server_home, commit=False)
    rerun = session.get(Job, out.id)
    assert rerun is not None
    rerun.rerun_of = original
    session.commit()
    return out
