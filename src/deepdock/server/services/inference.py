"""Services (a model version served by replicas behind the gateway): apply, list, describe, update,
scale, rollback, delete - ``verb_noun(session, ...)`` functions that own the ORM → api conversion.

"Service" is the users' word; in code it is an *inference service*, keeping the word away from this
``services/`` layer (DESIGN.md "Names"). What happens next - image builds, replicas, readiness, traffic,
canary judgement - is the rollout step's (background/rollout.py); these functions only change the desired
state and record why.

Decisions:
- A service name is unique on the server, not per project: it is the endpoint's URL segment
  (``/services/NAME/``), one namespace like a DNS name. Taking a name another project holds is a conflict
  that does not say which project holds it.
- A service serves a model of its own project only (``project`` of the spec); another project's model is
  "not found", as everywhere.
- The revision of an apply is found by its fields (``specs.service.revision_fields``): applying the same
  spec twice makes no second revision, and changing only replicas or the rollout policy makes none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from deepdock.api import RevisionOut, ServiceDetail, ServiceEventOut, ServiceOut, ServiceReplicaOut, ServiceSampleOut
from deepdock.api.enums import AttemptStatus, JobStatus, RevisionStatus, ServiceEventKind, ServiceStatus, StopRequest
from deepdock.errors import ConflictError, NotFoundError, SpecError, UnschedulableError
from deepdock.server.db.models import (
    ApiToken,
    Attempt,
    InferenceEvent,
    InferenceReplica,
    InferenceRevision,
    InferenceService,
    Job,
    Membership,
    ModelVersion,
    Node,
    ServiceSample,
    User,
    now_s,
)
from deepdock.server.services import lifecycle
from deepdock.server.services.auth import project_for_submit, visible_project_ids
from deepdock.server.services.registry import get_version
from deepdock.specs.service import AutoscalingSpec, CanarySpec, ServiceSpec, revision_fields

# Revisions that still hold (or may hold) traffic: a version they serve cannot be deleted.
LIVE_REVISIONS = frozenset({RevisionStatus.BUILDING, RevisionStatus.ROLLING, RevisionStatus.CANARY,
                            RevisionStatus.SERVING})
EVENTS_SHOWN = 50


def service_spec(service: InferenceService) -> ServiceSpec:
    cached: ServiceSpec | None = service.__dict__.get("_parsed_spec")
    if cached is None:
        cached = ServiceSpec.model_validate(service.spec)
        service.__dict__["_parsed_spec"] = cached
    return cached


def record(session: Session, service: InferenceService, kind: ServiceEventKind, message: str, *,
           revision: int | None = None, by: str = "", at: float | None = None) -> None:
    session.add(InferenceEvent(service_id=service.id, revision=revision, kind=kind, message=message, by=by,
                               at=now_s() if at is None else at))


# -- reading ------------------------------------------------------------------------------------------------
def get_service(session: Session, user: User, name: str) -> InferenceService:
    service = session.scalar(select(InferenceService).where(InferenceService.name == name))
    visible = visible_project_ids(session, user)
    if service is None or (visible is not None and service.project_id not in visible):
        raise NotFoundError(f"no service {name!r}")  # another project's service is not revealed
    return service


def _writable(session: Session, user: User, name: str) -> InferenceService:
    service = get_service(session, user, name)
    project_for_submit(session, user, service.project.name)
    return service


def revision_of(session: Session, service_id: int, number: int | None) -> InferenceRevision | None:
    if number is None:
        return None
    return session.scalar(select(InferenceRevision).where(InferenceRevision.service_id == service_id,
                                                          InferenceRevision.number == number))


def traffic(replicas: list[InferenceReplica]) -> dict[int, float]:
    total = sum(r.weight for r in replicas)
    shares: dict[int, float] = {}
    for r in replicas:
        if total and r.weight:
            shares[r.revision] = shares.get(r.revision, 0.0) + 100.0 * r.weight / total
    return {k: round(v, 1) for k, v in sorted(shares.items())}


def service_out(session: Session, service: InferenceService, endpoint_base: str) -> ServiceOut:
    replicas = list(session.scalars(select(InferenceReplica).where(InferenceReplica.service_id == service.id)))
    latest = session.scalar(select(ServiceSample).where(ServiceSample.service_id == service.id,
                                                        ServiceSample.revision.is_(None))
                            .order_by(ServiceSample.at.desc()).limit(1))
    return ServiceOut(
        name=service.name, project=service.project.name, model=service_spec(service).model,
        status=ServiceStatus(service.status), status_reason=service.status_reason,
        desired_replicas=service.desired_replicas,
        ready_replicas=sum(1 for r in replicas if r.ready and r.retiring_since is None),
        stable_revision=service.stable_revision, target_revision=service.target_revision,
        traffic=traffic(replicas), endpoint=f"{endpoint_base.rstrip('/')}/services/{service.name}",
        created_at=service.created_at, rps=latest.rps if latest is not None else None,
        p99_ms=latest.p99_ms if latest is not None else None,
    )


def list_services(session: Session, user: User, endpoint_base: str) -> list[ServiceOut]:
    query = select(InferenceService).order_by(InferenceService.name)
    visible = visible_project_ids(session, user)
    if visible is not None:
        query = query.where(InferenceService.project_id.in_(visible))
    return [service_out(session, s, endpoint_base) for s in session.scalars(query)]


def _revision_out(rev: InferenceRevision) -> RevisionOut:
    f = rev.fields
    return RevisionOut(number=rev.number, model=f["model"], version=f["version"], runtime=f["runtime"], image=rev.image,
                       status=RevisionStatus(rev.status), reason=rev.reason, created_by=rev.created_by,
                       created_at=rev.created_at)


def describe_service(session: Session, user: User, name: str, endpoint_base: str) -> ServiceDetail:
    service = get_service(session, user, name)
    revisions = session.scalars(select(InferenceRevision).where(InferenceRevision.service_id == service.id)
                                .order_by(InferenceRevision.number))
    rows = list(session.execute(
        select(InferenceReplica, Job).join(Job, Job.id == InferenceReplica.job_id)
        .where(InferenceReplica.service_id == service.id).order_by(InferenceReplica.created_at)))
    failures = dict(session.execute(
        select(Attempt.job_id, func.count()).where(Attempt.job_id.in_([j.id for _, j in rows]),
                                                   Attempt.status == AttemptStatus.FAILED)
        .group_by(Attempt.job_id)).all()) if rows else {}
    nodes = _replica_nodes(session, [j.id for _, j in rows])
    replicas = [ServiceReplicaOut(job=j.id, revision=r.revision, status=JobStatus(j.status), node=nodes.get(j.id),
                                  address=r.address, port=r.port, ready=r.ready, retiring=r.retiring_since is not None,
                                  weight=r.weight, restarts=failures.get(j.id, 0),
                                  pending=(j.pending_reason or {}).get("message") if j.status == JobStatus.QUEUED
                                  else None) for r, j in rows]
    events = list(session.scalars(select(InferenceEvent).where(InferenceEvent.service_id == service.id)
                                  .order_by(InferenceEvent.id.desc()).limit(EVENTS_SHOWN)))
    return ServiceDetail(
        **service_out(session, service, endpoint_base).model_dump(), spec=service.spec, canary_step=service.canary_step,
        revisions=[_revision_out(r) for r in revisions], replicas=replicas,
        events=[ServiceEventOut(at=e.at, revision=e.revision, kind=ServiceEventKind(e.kind), message=e.message, by=e.by)
                for e in reversed(events)],
    )


def _replica_nodes(session: Session, job_ids: list[str]) -> dict[str, str]:
    """The node of each job's latest attempt."""
    if not job_ids:
        return {}
    from deepdock.server.db.models import Replica

    rows = session.execute(select(Replica.job_id, Replica.node_name, Replica.attempt_id)
                           .where(Replica.job_id.in_(job_ids)).order_by(Replica.attempt_id)).all()
    return {job_id: node for job_id, node, _ in rows}


# -- changing -----------------------------------------------------------------------------------------------
def _check_fits(session: Session, spec: ServiceSpec) -> None:
    from deepdock.scheduler import can_ever_fit
    from deepdock.scheduler.types import Resources
    from deepdock.server.services.jobs import node_states_for_capacity

    nodes = list(session.scalars(select(Node)))
    if not nodes:
        raise UnschedulableError("no nodes are registered; add one with `deepdock node add`")
    r = spec.resources
    problem = can_ever_fit(Resources(cpus=r.cpus, memory=r.memory, gpus=r.gpus), 1, r.gpu_type,
                           node_states_for_capacity(nodes), gpu_memory=r.gpu_memory)
    if problem is not None:
        raise UnschedulableError(f"a replica of service {spec.name} could never be placed: {problem}")


def _initial_replicas(spec: ServiceSpec, current: int | None) -> int:
    scaling = spec.autoscaling
    if scaling is None:
        return spec.replicas
    return min(scaling.max, max(scaling.min, current if current is not None else scaling.min))


def apply_service(session: Session, user: User, spec: ServiceSpec) -> tuple[str, int | None]:
    """Create the service or change it; returns its name and the revision it now rolls out to. Commits.

    Bad input is refused here, before anything is stored: a model or version that does not exist, a
    version without a servable export, an unknown runtime, a replica no node could ever hold."""
    from deepdock.envs.serving_image import NotServable, choose_runtime

    project = project_for_submit(session, user, spec.project)
    model, version = get_version(session, user, spec.model, project.name)
    try:
        runtime, _file = choose_runtime(f"{model.name}:{version.version}", version.formats, version.signature,
                                        spec.runtime)
    except NotServable as exc:
        raise SpecError(str(exc), details={"field": "model"}) from None
    _check_fits(session, spec)
    now = now_s()
    service = session.scalar(select(InferenceService).where(InferenceService.name == spec.name))
    if service is not None and service.project_id != project.id:
        raise ConflictError(f"service name {spec.name!r} is taken; choose another")
    if service is None:
        service = InferenceService(name=spec.name, project_id=project.id, spec=spec.model_dump(mode="json"),
                                   created_by=user.name, status=ServiceStatus.DEPLOYING,
                                   desired_replicas=_initial_replicas(spec, None), created_at=now, updated_at=now)
        session.add(service)
        session.flush()
        record(session, service, ServiceEventKind.APPLIED, f"created, serving {model.name}:{version.version}",
               by=user.name, at=now)
    else:
        service.spec = spec.model_dump(mode="json")
        service.__dict__.pop("_parsed_spec", None)
        service.desired_replicas = _initial_replicas(spec, service.desired_replicas)
        service.updated_at = now
    number = target_revision(session, service, spec, version, runtime, user, now)
    with lifecycle.fenced(f"service {service.name}"):
        session.flush()
    session.commit()
    return service.name, number


def target_revision(session: Session, service: InferenceService, spec: ServiceSpec, version: ModelVersion,
                     runtime: str, user: User, now: float, *, reason: str = "") -> int:
    """The revision serving ``spec``'s fields: the current target when they are equal, else a new one that
    becomes the target (a canary from step 0 when the spec asks for one and something already serves)."""
    fields = revision_fields(spec, version.version, runtime)
    current = revision_of(session, service.id, service.target_revision)
    if current is not None and current.fields == fields and current.status != RevisionStatus.FAILED:
        return current.number
    highest = session.scalar(select(func.max(InferenceRevision.number))
                             .where(InferenceRevision.service_id == service.id)) or 0
    revision = InferenceRevision(service_id=service.id, number=highest + 1, fields=fields, model_version_id=version.id,
                                 status=RevisionStatus.BUILDING, created_by=user.name, created_at=now)
    session.add(revision)
    if current is not None and current.number != service.stable_revision and current.status in LIVE_REVISIONS:
        current.status, current.reason = RevisionStatus.RETIRED, f"replaced by revision {revision.number} before it served"
    service.target_revision = revision.number
    canary = spec.rollout.canary
    service.canary_step = 0 if canary is not None and service.stable_revision is not None else None
    service.step_started_at = None
    how = f"canary {canary.steps[0]:g}% first" if canary is not None and service.canary_step == 0 else "rolling update"
    record(session, service, ServiceEventKind.APPLIED,
           reason or f"revision {revision.number}: {spec.model_name}:{version.version} ({runtime}); {how}",
           revision=revision.number, by=user.name, at=now)
    return revision.number


def update_service(session: Session, user: User, name: str, *, model: str | None = None, runtime: str | None = None,
                   canary: float | None = None, cpus: float | None = None, memory: int | str | None = None,
                   max_batch_size: int | None = None, max_wait_ms: float | None = None) -> tuple[str, int | None]:
    """``service update``: the current spec with these changes, applied (a new revision when what a
    replica runs changes). ``canary`` is the first step's percent (then 50% when it is lower, then all);
    0 asks for a rolling update."""
    service = _writable(session, user, name)
    doc: dict[str, Any] = service_spec(service).model_dump(mode="json")
    if model is not None:
        doc["model"] = model
    if runtime is not None:
        doc["runtime"] = runtime
    if cpus is not None:
        doc["resources"]["cpus"] = cpus
    if memory is not None:
        doc["resources"]["memory"] = memory
    if max_batch_size is not None:
        doc["batching"]["max_batch_size"] = max_batch_size
    if max_wait_ms is not None:
        doc["batching"]["max_wait_ms"] = max_wait_ms
    if canary is not None:
        doc["rollout"]["canary"] = None if canary == 0 else {
            **(doc["rollout"].get("canary") or CanarySpec().model_dump(mode="json")),
            "steps": [canary, 50.0] if canary < 50 else [canary]}
    try:
        spec = ServiceSpec.model_validate(doc)
    except ValueError as exc:
        raise SpecError(f"service {name}: {exc}") from None
    return apply_service(session, user, spec)


def scale_service(session: Session, user: User, name: str, *, replicas: int | None = None, min: int | None = None,
                  max: int | None = None, target_concurrency: float | None = None,
                  target_rps: float | None = None) -> str:
    """A fixed count (autoscaling off), or an autoscaling range and target. Not a revision. Commits."""
    service = _writable(session, user, name)
    doc = service_spec(service).model_dump(mode="json")
    ranged = any(v is not None for v in (min, max, target_concurrency, target_rps))
    if replicas is not None and ranged:
        raise SpecError("give --replicas, or an autoscaling range (--min/--max with a target), not both")
    if replicas is not None:
        doc["replicas"], doc["autoscaling"] = replicas, None
    elif ranged:
        scaling = dict(doc.get("autoscaling") or {})
        scaling.update({k: v for k, v in {"min": min, "max": max}.items() if v is not None})
        if target_concurrency is not None or target_rps is not None:
            scaling["target_concurrency"], scaling["target_rps"] = target_concurrency, target_rps
        scaling.setdefault("max", scaling.get("min", 1))
        try:
            doc["autoscaling"] = AutoscalingSpec.model_validate(scaling).model_dump(mode="json")
        except ValueError as exc:
            raise SpecError(f"service {name}: {exc}") from None
    else:
        raise SpecError("give --replicas N, or --min/--max with --target-concurrency or --target-rps")
    spec = ServiceSpec.model_validate(doc)
    _check_fits(session, spec)
    before = service.desired_replicas
    service.spec = spec.model_dump(mode="json")
    service.__dict__.pop("_parsed_spec", None)
    service.desired_replicas = _initial_replicas(spec, before)
    service.scaled_at, service.updated_at = now_s(), now_s()
    how = (f"{spec.replicas} replicas" if spec.autoscaling is None else
           f"autoscaling {spec.autoscaling.min}-{spec.autoscaling.max}")
    record(session, service, ServiceEventKind.SCALED, f"{how} ({before} → {service.desired_replicas} now)", by=user.name)
    with lifecycle.fenced(f"service {service.name}"):
        session.flush()
    session.commit()
    return service.name


def rollback_service(session: Session, user: User, name: str) -> int:
    """Back to the previous revision: a rollout under way is abandoned (the serving revision keeps all the
    traffic); otherwise the revision that served before the current one rolls out again, without a
    canary. Returns the revision rolled back to. Commits."""
    service = _writable(session, user, name)
    now = now_s()
    current = revision_of(session, service.id, service.target_revision)
    if current is None:
        raise ConflictError(f"service {name} has no revision yet")
    if service.stable_revision is not None and service.target_revision != service.stable_revision:
        back_to = service.stable_revision
        why = f"rollout of revision {current.number} abandoned by {user.name}"
    else:
        previous = session.scalar(
            select(InferenceRevision).where(InferenceRevision.service_id == service.id,
                                            InferenceRevision.number < current.number,
                                            InferenceRevision.status.in_([RevisionStatus.RETIRED,
                                                                          RevisionStatus.ROLLED_BACK]),
                                            InferenceRevision.image.is_not(None))
            .order_by(InferenceRevision.number.desc()).limit(1))
        if previous is None:
            raise ConflictError(f"service {name} has no earlier revision that served to roll back to")
        back_to = previous.number
        previous.status, previous.reason = RevisionStatus.ROLLING, f"rolled back to by {user.name}"
        why = f"rolled back from revision {current.number} to {back_to} by {user.name}"
    current.status, current.reason = RevisionStatus.ROLLED_BACK, why
    service.target_revision = back_to
    service.canary_step, service.step_started_at = None, None
    service.updated_at = now
    record(session, service, ServiceEventKind.ROLLED_BACK, why, revision=back_to, by=user.name, at=now)
    with lifecycle.fenced(f"service {service.name}"):
        session.flush()
    session.commit()
    return back_to


def delete_service(session: Session, user: User, name: str) -> list[str]:
    """Stop every replica and forget the service (its replica jobs stay, STOPPED, as history); the gateway
    drops its route at its next sync. Returns the replica jobs stopped. Commits."""
    service = _writable(session, user, name)
    jobs = list(session.scalars(select(Job).join(InferenceReplica, InferenceReplica.job_id == Job.id)
                                .where(InferenceReplica.service_id == service.id)))
    stopped = [j.id for j in jobs if stop_replica_job(session, j, f"service {name} deleted by {user.name}")]
    session.delete(service)
    session.commit()
    return stopped


def stop_replica_job(session: Session, job: Job, reason: str) -> bool:
    """Ask a replica's job to stop for good (as a user's stop: it ends STOPPED and is not retried)."""
    if job.status in lifecycle.TERMINAL:
        return False
    if job.status == JobStatus.QUEUED:
        lifecycle.transition(session, job, JobStatus.STOPPED, reason)
    elif job.stop_requested != StopRequest.USER:
        job.stop_requested = StopRequest.USER
        job.status_reason = reason
        job.updated_at = now_s()
    return True


def version_in_service(session: Session, version_id: int) -> list[str]:
    """Services whose live revisions serve this model version (it cannot be deleted while they do)."""
    return list(session.scalars(
        select(InferenceService.name).join(InferenceRevision, InferenceRevision.service_id == InferenceService.id)
        .where(InferenceRevision.model_version_id == version_id, InferenceRevision.status.in_(LIVE_REVISIONS))
        .distinct()))


def caller_token_hashes(session: Session, project_id: int) -> frozenset[str]:
    """Hashes of the API tokens that may call a project's services: its members' and the admins'."""
    members = select(Membership.user_id).where(Membership.project_id == project_id)
    rows = session.scalars(select(ApiToken.token_hash).join(User, User.id == ApiToken.user_id)
                           .where((User.is_admin.is_(True)) | (User.id.in_(members))))
    return frozenset(rows)


def service_samples(session: Session, user: User, name: str, since: float | None = None) -> list[ServiceSampleOut]:
    """The service's traffic samples (oldest first), since ``since`` or over the last hour."""
    service = get_service(session, user, name)
    start = since if since is not None else now_s() - 3600
    rows = session.scalars(select(ServiceSample).where(ServiceSample.service_id == service.id,
                                                       ServiceSample.at > start).order_by(ServiceSample.at))
    return [ServiceSampleOut(at=r.at, revision=r.revision, requests=r.requests, errors=r.errors, rps=r.rps,
                             p50_ms=r.p50_ms, p99_ms=r.p99_ms) for r in rows]
