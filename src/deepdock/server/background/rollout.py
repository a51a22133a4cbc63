"""The rollout step: services' desired state → serving images, replica jobs, readiness, traffic weights,
canary judgement and autoscaling; then the gateway is told the routes.

One round (``Rollouts.run``), level-triggered like every step:

1. **Build**: a revision without an image gets one, built on this host's engine from the registry's files
   (a task in its own lane: a build takes seconds with the layers cached, minutes the first time).
2. **Observe** (I/O, outside any transaction): each running replica's published port (inspected once per
   container) and its ``/v2/health/ready``, probed in parallel with a short timeout.
3. **Decide** (one transaction per service, fenced by the service's lock): readiness written; a replica
   that was ready and stays unready for ``UNHEALTHY_AFTER_S`` is restarted (its job fails as unhealthy and
   retries with backoff); ``rollout_plan.plan`` says what to create, retire, promote or fail; weights follow
   its shares; a retired replica is stopped once it has been out of traffic for ``DRAIN_S``.
4. **Scale**: with autoscaling, the wanted count from the gateway's log (concurrency by Little's law, or
   requests per second) over the spec's window: up at once, down only after the cooldown.
5. **Route**: every service's replicas with a port, weights included, to the gateway (``Gateway.apply``:
   a weight change goes through HAProxy's runtime API, a changed set of replicas is a seamless reload).

A replica is a job (server/services/inference.py): the scheduler places it (spread over nodes with the
service's spread group, not preempted by default), the job machinery starts it, restarts it with backoff
when it fails, and re-creates it elsewhere when its node is lost.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from deepdock.api.enums import AttemptStatus, JobStatus, RevisionStatus, ServiceEventKind, ServiceStatus, StopRequest
from deepdock.compute.abilities import ImageProvision, ability
from deepdock.compute.pool import NodeConnection
from deepdock.errors import DeepdockError
from deepdock.server.background.start import HOST_BUILDER
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import (
    Attempt,
    InferenceReplica,
    InferenceRevision,
    InferenceService,
    Job,
    Model,
    ModelVersion,
    Node,
    Replica,
    ServiceSample,
    User,
)
from deepdock.server.services import lifecycle
from deepdock.server.services.distributed import node_address
from deepdock.server.services.inference import (
    caller_token_hashes,
    record,
    revision_of,
    service_spec,
    stop_replica_job,
    target_revision,
)
from deepdock.server.services.jobs import submit_job
from deepdock.server.services.rollout_plan import CanaryStats, ReplicaView, RolloutInput, RolloutPlan, plan
from deepdock.specs.job import JobSpec, RetrySpec
from deepdock.specs.service import ServiceSpec

SERVING_PORT = 8080  # the serving image's own (envs/serving_image.py SERVING_PORT)
READY_PATH = "/v2/health/ready"
PROBE_TIMEOUT_S = 0.5
MAX_PARALLEL_PROBES = 16
# A replica that was ready and has failed its readiness probe this long is restarted.
UNHEALTHY_AFTER_S = 15.0
# A retired replica gets no new requests (weight 0) this long before its job is stopped, so the requests
# it holds finish (the model server drains what is left on SIGTERM too).
DRAIN_S = 2.0
# Every this long, each service's traffic over that window (all revisions, then each one) is stored for
# the dashboard's charts, and kept a day.
SAMPLE_EVERY_S = 5.0
SAMPLES_KEPT_S = 86400.0
# A replica's job restarts this many times (with backoff) before the rollout gives it up.
REPLICA_RETRIES = 100
# HAProxy's weights are 0-256; a replica's share of traffic becomes its weight on this scale.
MAX_WEIGHT = 256
EVEN_WEIGHT = 100
BUILD_LANE = "_serving-build"

Probe = Callable[[str, int], bool]


def http_ready(address: str, port: int) -> bool:
    try:
        return httpx.get(f"http://{address}:{port}{READY_PATH}", timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class _Seen:
    """One replica as the observe phase found it."""

    job_id: str
    container_id: str | None
    address: str | None
    port: int | None
    ready: bool


class Rollouts:
    def __init__(self, probe: Probe = http_ready, gateway: object | None = None, access_log: object | None = None) -> None:
        self.probe = probe
        self.gateway = gateway
        self._wake: set[threading.Event] = set()
        self._sampled_at: float | None = None
        self.access_log = access_log

    # -- one round ------------------------------------------------------------------------------------
    def run(self, ctx: AppContext, work: Work) -> None:
        self._submit_builds(ctx, work)
        seen = self._observe(ctx)
        with ctx.db.session() as session:
            ids = list(session.scalars(select(InferenceService.id)))
        for service_id in ids:
            try:
                with ctx.db.session() as session:
                    self._decide(ctx, session, service_id, seen)
            except lifecycle.StaleStateError as exc:
                log.info("service %s: %s (next round)", service_id, exc.message)
        self._route(ctx)
        self._sample(ctx)

    # -- 1. builds ------------------------------------------------------------------------------------
    def _submit_builds(self, ctx: AppContext, work: Work) -> None:
        with ctx.db.session() as session:
            pending = list(session.scalars(select(InferenceRevision.id).where(
                InferenceRevision.status == RevisionStatus.BUILDING, InferenceRevision.image.is_(None))))
        for revision_id in pending:
            work.engine.submit(f"serving-build:{revision_id}", build_revision, ctx, revision_id, lane=BUILD_LANE)

    # -- 2. observe -----------------------------------------------------------------------------------
    def _observe(self, ctx: AppContext) -> dict[str, _Seen]:
        with ctx.db.session() as session:
            rows = session.execute(
                select(InferenceReplica, Replica.container_id, Node, InferenceService.name)
                .join(Job, Job.id == InferenceReplica.job_id)
                .join(InferenceService, InferenceService.id == InferenceReplica.service_id)
                .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt_count))
                .join(Replica, (Replica.attempt_id == Attempt.id) & (Replica.rank == 0))
                .join(Node, Node.name == Replica.node_name)
                .where(Job.status == JobStatus.RUNNING, Attempt.status == AttemptStatus.RUNNING,
                       Replica.container_id.is_not(None))).all()
            session.expunge_all()

        # Ready means callers reach it: the gateway's own health check must say UP too, so `serve`
        # never reports ready while the endpoint still answers 503 (a new replica is checked from the
        # reload that adds it, at weight 0, before it gets traffic).
        at_gateway = self._gateway_states()

        def look(row: tuple[InferenceReplica, str | None, Node, str]) -> _Seen:
            replica, container_id, node, service_name = row
            address, port = replica.address, replica.port
            if container_id != replica.container_id or port is None:
                address, port = node_address(node), None
                try:
                    port = ctx.backend(node).inspect(container_id or "").ports.get(SERVING_PORT)
                except DeepdockError as exc:
                    log.info("replica %s: no port yet (%s)", replica.job_id, exc.message)
            ready = port is not None and address is not None and self.probe(address, port) and (
                at_gateway is None
                or at_gateway.get((service_name, server_name(replica)), {}).get("status") == "UP")
            return _Seen(replica.job_id, container_id, address, port, ready)

        if not rows:
            return {}
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PROBES, len(rows)), thread_name_prefix="dd-probe") as pool:
            return {s.job_id: s for s in pool.map(look, rows)}

    def _gateway_states(self) -> dict[tuple[str, str], dict[str, str]] | None:
        if self.gateway is None:
            return None
        try:
            return self.gateway.server_states()  # type: ignore[attr-defined, no-any-return]
        except DeepdockError as exc:
            log.warning("the gateway did not report its replicas' health (probes alone judge): %s", exc.message)
            return None

    # -- 3. decide ------------------------------------------------------------------------------------
    def _decide(self, ctx: AppContext, session: Session, service_id: int, seen: dict[str, _Seen]) -> None:
        service = session.get(InferenceService, service_id)
        if service is None:
            return
        now = ctx.clock()
        spec = service_spec(service)
        rows = list(session.execute(
            select(InferenceReplica, Job).join(Job, Job.id == InferenceReplica.job_id)
            .where(InferenceReplica.service_id == service.id)))
        failures = _failures(session, [j.id for _, j in rows])
        views: list[ReplicaView] = []
        kept: list[InferenceReplica] = []
        for replica, job in rows:
            found = seen.get(job.id)
            self._note_readiness(ctx, session, service, replica, job, found, now)
            if job.status in lifecycle.TERMINAL:
                session.delete(replica)  # a retired one that stopped, or one that failed for good: replaced
                continue
            kept.append(replica)
            if replica.retiring_since is not None and now - replica.retiring_since >= DRAIN_S:
                if stop_replica_job(session, job, f"retired from service {service.name}"):
                    self._wake.add(ctx.wake_reconciler)
            views.append(ReplicaView(job_id=job.id, revision=replica.revision,
                                     alive=job.stop_requested != StopRequest.USER, ready=replica.ready,
                                     retiring=replica.retiring_since is not None,
                                     age_s=now - replica.created_at, failures=failures.get(job.id, 0)))
        self._autoscale(session, service, spec, now)
        _follow_alias(session, service, spec, now)
        target = revision_of(session, service.id, service.target_revision)
        decision = plan(RolloutInput(
            desired=service.desired_replicas, stable=service.stable_revision, target=service.target_revision,
            target_ready_to_run=target is not None and target.image is not None, replicas=views,
            rollout=spec.rollout, canary_step=service.canary_step,
            step_age_s=None if service.step_started_at is None else now - service.step_started_at,
            canary=self._canary_stats(service, now)))
        self._apply(ctx, session, service, spec, decision, kept, now)
        with lifecycle.fenced(f"service {service.name}"):
            session.flush()
        session.commit()
        # Only now: a loop woken before the commit would find nothing new and sleep its whole period.
        for event in self._wake:
            event.set()
        self._wake.clear()

    def _note_readiness(self, ctx: AppContext, session: Session, service: InferenceService, replica: InferenceReplica, job: Job,
                        found: _Seen | None, now: float) -> None:
        if found is not None:
            replica.container_id, replica.address, replica.port = found.container_id, found.address, found.port
        ready = found is not None and found.ready
        if ready and not replica.ready:
            replica.ready, replica.ready_since, replica.unready_since = True, now, None
        elif not ready and replica.ready:
            replica.ready, replica.unready_since = False, now
        if found is None and job.status != JobStatus.RUNNING:
            replica.ready, replica.port = False, None
        stuck = (not ready and replica.ready_since is not None and replica.unready_since is not None
                 and now - replica.unready_since >= UNHEALTHY_AFTER_S)
        if stuck and job.status == JobStatus.RUNNING and job.stop_requested is None and replica.retiring_since is None:
            job.stop_requested = StopRequest.UNHEALTHY
            self._wake.add(ctx.wake_reconciler)
            job.status_reason = f"{READY_PATH} failing for {now - (replica.unready_since or now):.0f}s"
            replica.ready_since = replica.unready_since = None
            record(session, service, ServiceEventKind.REPLICA, f"replica {job.id} restarted: {job.status_reason}",
                   revision=replica.revision, at=now)

    def _canary_stats(self, service: InferenceService, now: float) -> CanaryStats | None:
        if service.canary_step is None or service.step_started_at is None or self.access_log is None:
            return None
        window = self.access_log.window(service.name, max(1e-3, now - service.step_started_at),  # type: ignore[attr-defined]
                                        revision=service.target_revision, now=now)
        return CanaryStats(requests=window.requests, errors=window.errors, p99_ms=window.p99_ms)

    def _apply(self, ctx: AppContext, session: Session, service: InferenceService, spec: ServiceSpec,
               decision: RolloutPlan, replicas: list[InferenceReplica], now: float) -> None:
        target = revision_of(session, service.id, service.target_revision)
        for number in decision.create:
            revision = revision_of(session, service.id, number)
            if revision is not None and revision.image is not None:
                create_replica(session, service, spec, revision, now)
                self._wake.add(ctx.wake_scheduler)
        for replica in replicas:
            if replica.job_id in decision.retire and replica.retiring_since is None:
                replica.retiring_since = now
        if decision.fail is not None and target is not None:
            target.status, target.reason = RevisionStatus.FAILED, decision.fail
            record(session, service, ServiceEventKind.FAILED, f"revision {target.number} rolled back: {decision.fail}",
                   revision=target.number, at=now)
            service.target_revision = service.stable_revision
            target = revision_of(session, service.id, service.target_revision)
        elif decision.promote and target is not None:
            previous = revision_of(session, service.id, service.stable_revision)
            if previous is not None and previous is not target and previous.status == RevisionStatus.SERVING:
                previous.status, previous.reason = RevisionStatus.RETIRED, f"replaced by revision {target.number}"
            service.stable_revision = target.number
            record(session, service, ServiceEventKind.PROMOTED, f"revision {target.number} serves all traffic",
                   revision=target.number, at=now)
        if decision.note:
            record(session, service, ServiceEventKind.CANARY_STEP, decision.note, revision=service.target_revision, at=now)
        if decision.canary_step != service.canary_step or decision.fail is not None:
            service.step_started_at = None
        elif decision.start_step_clock:
            service.step_started_at = now
        service.canary_step = decision.canary_step if decision.fail is None else None
        if target is not None:
            _revision_status(service, target)
        _set_weights(replicas, decision)
        _service_status(session, service, replicas)

    # -- 4. autoscaling ---------------------------------------------------------------------------------
    def _autoscale(self, session: Session, service: InferenceService, spec: ServiceSpec, now: float) -> None:
        scaling = spec.autoscaling
        if scaling is None or self.access_log is None:
            return
        stats = self.access_log.window(service.name, scaling.window, now=now)  # type: ignore[attr-defined]
        load, target = ((stats.concurrency, scaling.target_concurrency) if scaling.target_concurrency is not None
                        else (stats.rps, scaling.target_rps))
        assert target is not None
        wanted = min(scaling.max, max(scaling.min, math.ceil(load / target) if load > 0 else scaling.min))
        current = service.desired_replicas
        cooled = service.scaled_at is None or now - service.scaled_at >= scaling.cooldown
        if wanted > current or (wanted < current and cooled):
            service.desired_replicas, service.scaled_at = wanted, now
            what = "concurrency" if scaling.target_concurrency is not None else "requests/s"
            record(session, service, ServiceEventKind.SCALED,
                   f"autoscaled {current} → {wanted}: {what} {load:.1f} over {scaling.window:g}s, target {target:g} "
                   "per replica", at=now)

    # -- 6. traffic samples (the dashboard's charts) ------------------------------------------------------
    def _sample(self, ctx: AppContext) -> None:
        now = ctx.clock()
        if self.access_log is None or (self._sampled_at is not None and now - self._sampled_at < SAMPLE_EVERY_S):
            return
        self._sampled_at = now
        with ctx.db.session() as session:
            for service in session.scalars(select(InferenceService)):
                session.add_all(_sample_rows(self.access_log, service, now))
            session.execute(delete(ServiceSample).where(ServiceSample.at < now - SAMPLES_KEPT_S))
            session.commit()

    # -- 5. routes --------------------------------------------------------------------------------------
    def _route(self, ctx: AppContext) -> None:
        if self.gateway is None:
            return
        from deepdock.gateway.routes import Backend, Route

        routes = []
        with ctx.db.session() as session:
            for service in session.scalars(select(InferenceService).order_by(InferenceService.name)):
                backends = tuple(
                    Backend(name=server_name(r), address=r.address, port=r.port, weight=r.weight,
                            revision=r.revision)
                    for r in session.scalars(select(InferenceReplica).where(InferenceReplica.service_id == service.id)
                                             .order_by(InferenceReplica.job_id))
                    if r.address and r.port)
                routes.append(Route(key=service.name, path_name=service.name, backends=backends,
                                    token_hashes=caller_token_hashes(session, service.project_id)))
        try:
            self.gateway.apply(routes)  # type: ignore[attr-defined]
        except DeepdockError as exc:
            log.warning("gateway update failed: %s", exc.message)


def _sample_rows(access_log: object, service: InferenceService, now: float) -> list[ServiceSample]:
    window = access_log.window  # type: ignore[attr-defined]
    rows = []
    revisions = sorted(access_log.revisions_seen(service.name))  # type: ignore[attr-defined]
    for revision in [None, *revisions]:
        stats = window(service.name, SAMPLE_EVERY_S, revision=revision, now=now)
        if revision is not None and not stats.requests:
            continue
        rows.append(ServiceSample(service_id=service.id, revision=revision, at=now, requests=stats.requests,
                                  errors=stats.errors, rps=stats.rps, p50_ms=stats.p50_ms, p99_ms=stats.p99_ms))
    return rows


def server_name(replica: InferenceReplica) -> str:
    """The replica's name at the gateway: its revision first (the access log's per-revision windows)."""
    return f"r{replica.revision}-{replica.job_id}"


def _follow_alias(session: Session, service: InferenceService, spec: ServiceSpec, now: float) -> None:
    """A service of ``name@alias`` rolls out the alias' new version when it moves (and the old one again
    when it is rolled back): a new revision, under the service's rollout policy.

    The alias is compared with the newest revision, not the serving one: a move makes exactly one
    revision, so a canary of it that fails, or a `service rollback` away from it, is not undone by the
    alias still pointing at it; the next move of the alias rolls out again (unless what serves is already
    the alias' version)."""
    from deepdock.server.db.models import ModelAlias

    if spec.alias is None or not spec.follow_alias:
        return
    target = revision_of(session, service.id, service.target_revision)
    newest = session.scalar(select(InferenceRevision).where(InferenceRevision.service_id == service.id)
                            .order_by(InferenceRevision.number.desc()).limit(1))
    if target is None or newest is None or RevisionStatus.BUILDING in (target.status, newest.status):
        return
    model = session.scalar(select(Model).where(Model.project_id == service.project_id, Model.name == spec.model_name))
    alias = session.get(ModelAlias, (model.id, spec.alias)) if model is not None else None
    if model is None or alias is None or alias.version in (newest.fields["version"], target.fields["version"]):
        return
    version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                        ModelVersion.version == alias.version))
    owner = session.scalar(select(User).where(User.name == (alias.updated_by or service.created_by)))
    if version is None or owner is None:
        return
    target_revision(session, service, spec, version, target.fields["runtime"], owner, now,
                     reason=f"{spec.model} moved to version {alias.version} (by {alias.updated_by or 'someone'}): "
                            "rolling it out")


def _failures(session: Session, job_ids: list[str]) -> dict[str, int]:
    if not job_ids:
        return {}
    return dict(session.execute(
        select(Attempt.job_id, func.count()).where(Attempt.job_id.in_(job_ids), Attempt.status == AttemptStatus.FAILED)
        .group_by(Attempt.job_id)).all())


def _revision_status(service: InferenceService, target: InferenceRevision) -> None:
    if target.status in (RevisionStatus.BUILDING, RevisionStatus.FAILED) or target.image is None:
        return
    if service.stable_revision == target.number and service.target_revision == target.number:
        target.status = RevisionStatus.SERVING
    elif service.canary_step is not None:
        target.status = RevisionStatus.CANARY
    else:
        target.status = RevisionStatus.ROLLING


def _set_weights(replicas: list[InferenceReplica], decision: RolloutPlan) -> None:
    serving = [r for r in replicas if r.ready and r.retiring_since is None]
    counts: dict[int, int] = {}
    for r in serving:
        counts[r.revision] = counts.get(r.revision, 0) + 1
    for r in replicas:
        if r not in serving:
            r.weight = 0
        elif decision.shares is None:
            r.weight = EVEN_WEIGHT
        else:
            share = decision.shares.get(r.revision, 0.0)
            r.weight = 0 if share <= 0 else max(1, min(MAX_WEIGHT, round(MAX_WEIGHT * share / 100 / counts[r.revision])))


def _service_status(session: Session, service: InferenceService, replicas: list[InferenceReplica]) -> None:
    ready = sum(1 for r in replicas if r.ready and r.retiring_since is None)
    target = revision_of(session, service.id, service.target_revision)
    if service.stable_revision is None:
        failed = target is not None and target.status == RevisionStatus.FAILED
        status, reason = ((ServiceStatus.FAILED, target.reason) if failed and target is not None else
                          (ServiceStatus.DEPLOYING, _deploying_reason(target, ready)))
    elif service.target_revision != service.stable_revision:
        step = "" if service.canary_step is None else f" (canary step {service.canary_step + 1})"
        status, reason = ServiceStatus.ROLLING_OUT, f"rolling out revision {service.target_revision}{step}"
    elif ready < service.desired_replicas:
        status, reason = ServiceStatus.DEGRADED, f"{ready} of {service.desired_replicas} replicas ready"
    else:
        status, reason = ServiceStatus.READY, f"{ready} replicas ready"
    if (service.status, service.status_reason) != (status, reason):
        service.status, service.status_reason = status, reason


def _deploying_reason(target: InferenceRevision | None, ready: int) -> str:
    if target is None:
        return "no revision"
    if target.image is None:
        return f"building the serving image of revision {target.number}"
    return f"waiting for replicas of revision {target.number} to be ready ({ready} ready)"


def create_replica(session: Session, service: InferenceService, spec: ServiceSpec, revision: InferenceRevision,
                   now: float) -> str:
    """A job that runs one replica of ``revision``, spread from the service's other replicas."""
    assert revision.image is not None
    fields = revision.fields
    batching, resources = fields["batching"], fields["resources"]
    threads = max(1, int(resources["cpus"]))
    job_spec = JobSpec.model_validate({
        "name": f"{service.name}-r{revision.number}",
        "image": revision.image,
        "command": ["python", "-m", "deepdock.serving", "--port", str(SERVING_PORT),
                    "--max-batch-size", str(batching["max_batch_size"]), "--max-wait-ms", f"{batching['max_wait_ms']:g}",
                    "--threads", str(threads)],
        "resources": resources,
        "project": service.project.name,
        "priority": spec.priority,
        "preemptible": spec.preemptible,
        "ports": [SERVING_PORT],
        "retry": RetrySpec(max_retries=REPLICA_RETRIES, on=["failed", "node_lost", "oom"]).model_dump(),
        "stop_grace": 15,
    })
    owner = session.scalar(select(User).where(User.name == revision.created_by)) or session.scalar(
        select(User).where(User.is_admin.is_(True)).limit(1))
    assert owner is not None
    out = submit_job(session, owner, job_spec, commit=False, spread_group=f"service:{service.id}", serving=True)
    session.add(InferenceReplica(job_id=out.id, service_id=service.id, revision=revision.number, created_at=now))
    return out.id


def build_revision(ctx: AppContext, revision_id: int) -> None:
    """The revision's serving image, from the registry's files, on this host's engine (a task)."""
    from deepdock.envs.serving_image import NotServable, choose_runtime
    from deepdock.serving.bundle import write_manifest
    from deepdock.serving.runtimes import MODEL_FILES

    with ctx.db.session() as session:
        revision = session.get(InferenceRevision, revision_id)
        if revision is None or revision.image is not None:
            return
        version = session.get(ModelVersion, revision.model_version_id)
        model = session.get(Model, version.model_id) if version is not None else None
        if version is None or model is None:
            _build_failed(ctx, revision_id, "its model version was deleted")
            return
        runtime = revision.fields["runtime"]
        ref = f"{model.name}:{version.version}"
        formats, signature, prefix, files = version.formats, version.signature, version.prefix, version.files
    try:
        chosen, file = choose_runtime(ref, formats, signature, runtime)
        with tempfile.TemporaryDirectory(prefix="deepdock-bundle-") as tmp:
            bundle = Path(tmp)
            for name in [file, *(f["path"] for f in files if f["path"] == f"{file}.data")]:
                target = bundle / (MODEL_FILES[chosen] if name == file else name)
                with target.open("wb") as out:
                    for chunk in ctx.artifacts.iter_chunks(f"{prefix}/{name}"):
                        out.write(chunk)
            write_manifest(bundle, model.name, str(version.version), chosen, MODEL_FILES[chosen], signature or {})
            builder = ctx.pool.get(NodeConnection(name=HOST_BUILDER, engine_url=ctx.settings.docker_host))
            tag = ability(builder, ImageProvision, HOST_BUILDER).build_model_server(bundle, chosen)
    except NotServable as exc:
        _build_failed(ctx, revision_id, str(exc))
        return
    except DeepdockError as exc:
        _build_failed(ctx, revision_id, f"building its serving image failed: {exc.message}")
        return
    with ctx.db.session() as session:
        revision = session.get(InferenceRevision, revision_id)
        service = session.get(InferenceService, revision.service_id) if revision is not None else None
        if revision is None or service is None:
            return
        revision.image = tag
        if revision.status == RevisionStatus.BUILDING:
            revision.status = RevisionStatus.ROLLING
        record(session, service, ServiceEventKind.BUILT, f"revision {revision.number}: image {tag}",
               revision=revision.number, at=ctx.clock())
        session.commit()
    ctx.wake_rollout.set()  # its replicas can be created now, not at the next period


def _build_failed(ctx: AppContext, revision_id: int, reason: str) -> None:
    with ctx.db.session() as session:
        revision = session.get(InferenceRevision, revision_id)
        service = session.get(InferenceService, revision.service_id) if revision is not None else None
        if revision is None or service is None:
            return
        revision.status, revision.reason = RevisionStatus.FAILED, reason
        record(session, service, ServiceEventKind.FAILED, f"revision {revision.number}: {reason}",
               revision=revision.number, at=ctx.clock())
        if service.target_revision == revision.number and service.stable_revision is not None:
            service.target_revision = service.stable_revision
            service.canary_step = service.step_started_at = None
        session.commit()
    log.warning("service revision %s failed: %s", revision_id, reason)
