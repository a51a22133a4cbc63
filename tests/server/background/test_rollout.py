"""The rollout step on fake engines, SQLite and PostgreSQL: a service from apply to serving, rolling
updates that never drop below the wanted ready count, canaries judged on the proxy's numbers, rollback,
unhealthy replicas restarted, autoscaling, alias following, and bad input refused at apply."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from deepdock.api.enums import JobStatus, RevisionStatus, ServiceStatus, StopRequest
from deepdock.errors import ConflictError, NotFoundError, SpecError, UnschedulableError
from deepdock.server.background.rollout import UNHEALTHY_AFTER_S, Rollouts
from deepdock.server.db.models import InferenceReplica, InferenceRevision, InferenceService, Job, Replica, User
from deepdock.server.services import inference, registry
from deepdock.server.services.jobs import submit_job
from deepdock.specs.job import JobSpec
from deepdock.specs.service import ServiceSpec
from tests.server.factories import make_model_version, make_project, make_user


@dataclass
class Probe:
    """Readiness the test decides: every replica is ready unless its port is listed as down."""

    down: set[int] = field(default_factory=set)

    def __call__(self, address: str, port: int) -> bool:
        return port not in self.down


@dataclass
class Window:
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rps: float = 0.0
    concurrency: float = 0.0


@dataclass
class AccessLog:
    """What the gateway's log would say: one window for everything, or one per revision."""

    overall: Window = field(default_factory=Window)
    by_revision: dict[int, Window] = field(default_factory=dict)

    def window(self, route_key: str, seconds: float, *, revision: int | None = None, now: float | None = None) -> Window:
        return self.overall if revision is None else self.by_revision.get(revision, Window())

    def revisions_seen(self, route_key: str) -> set[int]:
        return set(self.by_revision)


@pytest.fixture
def served(steps):
    """Two fake nodes (``a`` builds images), a model with two ONNX versions, the rollout step with a
    controllable probe and access log."""
    steps.ctx.settings.docker_host = "fake://a"
    steps.node("a", builds_environments=True)
    steps.node("b")
    with steps.session() as session:
        make_user(session)
        make_model_version(session, steps.ctx.artifacts, content=b"v1")
        make_model_version(session, steps.ctx.artifacts, content=b"v2")
    probe, access_log = Probe(), AccessLog()
    steps.controller.rollouts = Rollouts(probe=probe, access_log=access_log)
    return steps, probe, access_log


def admin(session) -> User:
    user = session.scalar(select(User).where(User.name == "admin"))
    assert user is not None
    return user


def apply(steps, **spec) -> None:
    spec.setdefault("name", "digits")
    spec.setdefault("model", "digits-mlp:1")
    with steps.session() as session:
        inference.apply_service(session, admin(session), ServiceSpec.model_validate(spec))


def tick(steps, seconds: float = 1.0) -> None:
    steps.controller.rollout_once()
    steps.schedule()
    steps.reconcile()
    steps.controller.rollout_once()
    steps.clock.advance(seconds)


def state(steps, name: str = "digits") -> tuple[InferenceService, list[tuple[InferenceReplica, Job]]]:
    with steps.session() as session:
        service = session.scalar(select(InferenceService).where(InferenceService.name == name))
        assert service is not None
        rows = list(session.execute(select(InferenceReplica, Job).join(Job, Job.id == InferenceReplica.job_id)
                                    .where(InferenceReplica.service_id == service.id)))
        session.expunge_all()
        return service, rows


def serving(rows) -> list[InferenceReplica]:
    return [r for r, _ in rows if r.weight > 0]


def settle(steps, until, rounds: int = 40, check=None) -> None:
    for _ in range(rounds):
        tick(steps)
        service, rows = state(steps)
        if check is not None:
            check(service, rows)
        if until(service, rows):
            return
    raise AssertionError(f"not settled: {state(steps)}")


def revision(steps, number: int) -> InferenceRevision:
    service, _ = state(steps)
    with steps.session() as session:
        rev = session.scalar(select(InferenceRevision).where(InferenceRevision.service_id == service.id,
                                                             InferenceRevision.number == number))
        assert rev is not None
        return rev


def ready_on(service: InferenceService, rows, number: int) -> bool:
    return (service.stable_revision == service.target_revision == number and service.status == ServiceStatus.READY
            and all(r.revision == number for r, _ in rows) and len(rows) == service.desired_replicas)


def test_apply_builds_places_spread_and_serves(served):
    steps, _, _ = served
    apply(steps, replicas=2)
    service, _ = state(steps)
    assert (service.status, service.target_revision, service.stable_revision) == (ServiceStatus.DEPLOYING, 1, None)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    service, rows = state(steps)
    assert revision(steps, 1).image.startswith("deepdock/serve:")
    assert revision(steps, 1).status == RevisionStatus.SERVING
    assert [r.weight for r, _ in rows] == [100, 100]
    with steps.session() as session:
        nodes = {session.scalar(select(Replica.node_name).where(Replica.job_id == j.id)) for _, j in rows}
        jobs = [session.get(Job, j.id) for _, j in rows]
    assert nodes == {"a", "b"}  # spread over the nodes
    assert all(not j.preemptible and j.spread_group == f"service:{service.id}" for j in jobs)
    assert all(r.port and r.address for r, _ in rows)


def test_rolling_update_keeps_every_wanted_replica_serving(served):
    steps, _, _ = served
    apply(steps, replicas=2)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))

    def never_below_two(service, rows) -> None:
        assert len(serving(rows)) >= 2, rows

    apply(steps, replicas=2, model="digits-mlp:2")
    settle(steps, lambda s, rows: ready_on(s, rows, 2), check=never_below_two)
    assert revision(steps, 1).status == RevisionStatus.RETIRED
    with steps.session() as session:
        kinds = [e.kind for e in inference.describe_service(session, admin(session), "digits", "http://gw").events]
    assert "promoted" in kinds


def test_same_spec_twice_is_one_revision_and_scaling_is_none(served):
    steps, _, _ = served
    apply(steps, replicas=1)
    apply(steps, replicas=1)
    with steps.session() as session:
        inference.scale_service(session, admin(session), "digits", replicas=3)
    settle(steps, lambda s, rows: ready_on(s, rows, 1) and len(rows) == 3)
    assert state(steps)[0].target_revision == 1


def test_canary_breach_rolls_back_on_its_own_and_stable_keeps_serving(served):
    steps, _, access_log = served
    apply(steps, replicas=2)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    apply(steps, replicas=2, model="digits-mlp:2",
          rollout={"canary": {"steps": [25], "interval": "30s"}, "slo": {"max_error_rate": 0.01, "min_requests": 20}})

    def canary_serving(service, rows) -> bool:
        return service.step_started_at is not None and any(r.revision == 2 and r.weight > 0 for r, _ in rows)

    settle(steps, canary_serving)
    service, rows = state(steps)
    weights = {r.revision: r.weight for r, _ in rows if r.weight}
    share = weights[2] / (weights[2] + 2 * weights[1])
    assert 0.2 <= share <= 0.3  # 25% of the traffic
    access_log.by_revision[2] = Window(requests=40, errors=10)
    tick(steps)
    service, rows = state(steps)
    assert service.target_revision == service.stable_revision == 1
    assert revision(steps, 2).status == RevisionStatus.FAILED
    assert "error rate 25.0%" in revision(steps, 2).reason
    settle(steps, lambda s, rows: ready_on(s, rows, 1))


def test_canary_that_keeps_its_slo_is_promoted_step_by_step(served):
    steps, _, access_log = served
    apply(steps, replicas=2)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    apply(steps, replicas=2, model="digits-mlp:2", rollout={"canary": {"steps": [10, 50], "interval": "5s"}})
    access_log.by_revision[2] = Window(requests=100, errors=0, p99_ms=5)
    settle(steps, lambda s, rows: ready_on(s, rows, 2))
    with steps.session() as session:
        notes = [e.message for e in inference.describe_service(session, admin(session), "digits", "gw").events
                 if e.kind == "canary_step"]
    assert any("10% passed" in n for n in notes) and any("50% passed" in n for n in notes)


def test_rollback_returns_to_the_previous_revision(served):
    steps, _, _ = served
    apply(steps, replicas=1)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    apply(steps, replicas=1, model="digits-mlp:2")
    settle(steps, lambda s, rows: ready_on(s, rows, 2))
    with steps.session() as session:
        assert inference.rollback_service(session, admin(session), "digits") == 1
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    assert revision(steps, 2).status == RevisionStatus.ROLLED_BACK


def test_a_replica_that_stays_unready_is_restarted(served):
    steps, probe, _ = served
    apply(steps, replicas=1)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    _, rows = state(steps)
    probe.down.add(rows[0][0].port)
    tick(steps, UNHEALTHY_AFTER_S + 1)
    tick(steps)
    restarted = steps.job(rows[0][1].id)
    assert restarted.stop_requested == StopRequest.UNHEALTHY or restarted.status == JobStatus.QUEUED
    probe.down.clear()
    for _ in range(30):  # the restart backs off, then the replica serves again
        tick(steps)
    service, rows = state(steps)
    attempts = steps.attempts(rows[0][1].id)
    assert len(serving(rows)) == 1 and len(attempts) == 2 and attempts[0].reason.startswith("unhealthy")


def test_autoscaling_follows_load_with_a_cooldown(served):
    steps, _, access_log = served
    apply(steps, autoscaling={"min": 1, "max": 3, "target_concurrency": 8, "cooldown": "20s"})
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    access_log.overall = Window(concurrency=20.0)
    settle(steps, lambda s, rows: s.desired_replicas == 3 and len(serving(rows)) == 3)
    access_log.overall = Window(concurrency=0.0)
    tick(steps, 5)
    assert state(steps)[0].desired_replicas == 3  # within the cooldown
    settle(steps, lambda s, rows: s.desired_replicas == 1 and len(rows) == 1)


def follow_production_from_1_to_2(steps) -> None:
    """A service of digits-mlp@production serving version 1, then rolled out to 2 by the alias' move."""
    with steps.session() as session:
        registry.set_alias(session, admin(session), "digits-mlp", "production", 1)
        session.commit()
    apply(steps, model="digits-mlp@production")
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    with steps.session() as session:
        registry.set_alias(session, admin(session), "digits-mlp", "production", 2)
        session.commit()
    settle(steps, lambda s, rows: ready_on(s, rows, 2))


def test_an_alias_move_rolls_out_and_its_rollback_rolls_back(served):
    steps, _, _ = served
    follow_production_from_1_to_2(steps)
    with steps.session() as session:
        registry.rollback_alias(session, admin(session), "digits-mlp", "production")
        session.commit()
    settle(steps, lambda s, rows: ready_on(s, rows, 3))
    assert revision(steps, 3).fields["version"] == 1


def test_a_service_rollback_is_not_undone_by_the_alias_it_follows(served):
    steps, _, _ = served
    follow_production_from_1_to_2(steps)
    with steps.session() as session:
        inference.rollback_service(session, admin(session), "digits")
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    for _ in range(5):
        tick(steps)
    service = state(steps)[0]
    with steps.session() as session:
        numbers = session.scalars(select(InferenceRevision.number).where(InferenceRevision.service_id == service.id))
        assert sorted(numbers) == [1, 2]
    assert service.target_revision == service.stable_revision == 1


@dataclass
class Gateway:
    """The routes it was given; every server's health as ``health`` says (HAProxy's checks)."""

    health: str = "DOWN"
    routes: list = field(default_factory=list)

    def apply(self, routes) -> str:
        self.routes = routes
        return "reloaded"

    def server_states(self) -> dict[tuple[str, str], dict[str, str]]:
        return {(r.key, b.name): {"status": self.health, "weight": str(b.weight)} for r in self.routes for b in r.backends}


def test_a_replica_is_ready_only_once_the_gateway_checks_it_up(served):
    steps, _, _ = served
    gateway = Gateway()
    steps.controller.rollouts.gateway = gateway
    apply(steps)
    for _ in range(6):
        tick(steps)
    service, rows = state(steps)
    assert rows and not any(r.ready for r, _ in rows) and service.status != ServiceStatus.READY
    (route,) = gateway.routes  # routed (at weight 0) before it is ready, so the gateway can check it
    assert [b.weight for b in route.backends] == [0] and route.backends[0].name.startswith("r1-")
    gateway.health = "UP"
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    assert [b.weight for b in gateway.routes[0].backends] == [100]  # all of the traffic


def test_a_replica_that_does_not_fit_says_why_it_waits(served):
    steps, _, _ = served
    apply(steps, replicas=3, resources={"cpus": 8, "memory": "1g"})  # two nodes of 8 CPUs: one replica each
    settle(steps, lambda s, rows: sum(r.ready for r, _ in rows) == 2)
    with steps.session() as session:
        detail = inference.describe_service(session, admin(session), "digits", "http://gw")
    waiting = [r for r in detail.replicas if r.status == JobStatus.QUEUED]
    assert len(waiting) == 1 and waiting[0].pending and "cpu" in waiting[0].pending.lower(), detail.replicas
    assert (detail.status, detail.status_reason) == (ServiceStatus.DEGRADED, "2 of 3 replicas ready")


def test_a_served_version_cannot_be_deleted(served):
    steps, _, _ = served
    apply(steps)
    with steps.session() as session, pytest.raises(ConflictError, match="served by service digits"):
        registry.delete_version(session, admin(session), "digits-mlp:1")


def test_bad_input_is_refused_at_apply(served):
    steps, _, _ = served
    with steps.session() as session:
        make_model_version(session, steps.ctx.artifacts, "raw", formats=())
        make_model_version(session, steps.ctx.artifacts, "unsigned", signature=None)
        session.commit()
    cases = [({"model": "nope:1"}, NotFoundError, "no model"),
             ({"model": "digits-mlp:9"}, NotFoundError, "no version 9"),
             ({"model": "raw:1"}, SpecError, "model export raw:1 --format onnx"),
             ({"model": "unsigned:1"}, SpecError, "no signature"),
             ({"runtime": "torchscript"}, SpecError, "no torchscript export"),
             ({"resources": {"cpus": 64}}, UnschedulableError, "could never be placed")]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            apply(steps, **overrides)
    with steps.session() as session:
        assert session.scalar(select(InferenceService)) is None  # nothing stored


def test_ports_are_for_replicas_only(served):
    steps, _, _ = served
    spec = JobSpec.model_validate({"name": "sneaky", "image": "busybox:latest", "command": ["true"], "ports": [80]})
    with steps.session() as session, pytest.raises(SpecError, match="ports are published only"):
        submit_job(session, admin(session), spec)


def test_another_project_cannot_see_change_or_take_the_name(served):
    steps, _, _ = served
    apply(steps)
    with steps.session() as session:
        outsider = make_user(session, "mallory", is_admin=False)
        make_project(session, "other", members=[outsider])
        make_model_version(session, steps.ctx.artifacts, "digits-mlp", project="other")
        session.commit()
        for call in (lambda: inference.describe_service(session, outsider, "digits", "gw"),
                     lambda: inference.rollback_service(session, outsider, "digits"),
                     lambda: inference.scale_service(session, outsider, "digits", replicas=5),
                     lambda: inference.delete_service(session, outsider, "digits")):
            with pytest.raises(NotFoundError):
                call()
        assert inference.list_services(session, outsider, "gw") == []
        taken = ServiceSpec(name="digits", model="digits-mlp:1", project="other")
        with pytest.raises(ConflictError, match="is taken"):
            inference.apply_service(session, outsider, taken)
        from deepdock.server.services.auth import create_token, hash_token

        theirs, ours = create_token(session, outsider), create_token(session, admin(session))
        session.commit()
        service = session.scalar(select(InferenceService))
        callers = inference.caller_token_hashes(session, service.project_id)
        assert hash_token(ours) in callers and hash_token(theirs) not in callers  # the gateway refuses mallory


def test_deleting_stops_every_replica(served):
    steps, _, _ = served
    apply(steps, replicas=2)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    _, rows = state(steps)
    with steps.session() as session:
        stopped = inference.delete_service(session, admin(session), "digits")
    assert sorted(stopped) == sorted(j.id for _, j in rows)
    for _ in range(5):
        tick(steps)
    assert all(steps.job(j.id).status == JobStatus.STOPPED for _, j in rows)


def test_traffic_is_sampled_for_the_dashboard_per_revision(served):
    steps, _, access_log = served
    apply(steps)
    settle(steps, lambda s, rows: ready_on(s, rows, 1))
    access_log.overall = Window(requests=50, errors=1, rps=10.0, p99_ms=7.5)
    access_log.by_revision[1] = Window(requests=50, errors=1, rps=10.0, p99_ms=7.5)
    for _ in range(3):
        tick(steps, 6)
    with steps.session() as session:
        samples = inference.service_samples(session, admin(session), "digits", since=0)
    assert len([s for s in samples if s.revision is None]) >= 2
    latest = [s for s in samples if s.revision == 1][-1]
    assert (latest.requests, latest.errors, latest.rps, latest.p99_ms) == (50, 1, 10.0, 7.5)
    with steps.session() as session:
        (listed,) = inference.list_services(session, admin(session), "http://gw")
    assert (listed.rps, listed.p99_ms) == (10.0, 7.5)  # the overview's and `service ls`' numbers
