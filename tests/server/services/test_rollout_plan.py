"""The rollout's rules, one call of the pure ``plan`` each."""

from __future__ import annotations

from deepdock.server.services.rollout_plan import (
    MAX_TARGET_FAILURES,
    CanaryStats,
    ReplicaView,
    RolloutInput,
    plan,
)
from deepdock.specs.service import RolloutSpec


def replicas(revision: int, count: int, *, ready: bool = True, start: int = 0, **kw) -> list[ReplicaView]:
    return [ReplicaView(job_id=f"r{revision}-{start + i}", revision=revision, alive=True, ready=ready, **kw)
            for i in range(count)]


def rolling(**kw) -> RolloutSpec:
    return RolloutSpec.model_validate(kw)


def test_first_deployment_creates_every_replica_and_serves_on_the_first_ready():
    out = plan(RolloutInput(desired=3, stable=None, target=1, target_ready_to_run=True, replicas=[],
                            rollout=rolling()))
    assert out.create == [1, 1, 1] and not out.promote
    out = plan(RolloutInput(desired=3, stable=None, target=1, target_ready_to_run=True,
                            replicas=replicas(1, 1) + replicas(1, 2, ready=False, start=1), rollout=rolling()))
    assert out.promote and out.create == []


def test_nothing_is_created_before_the_image_exists():
    out = plan(RolloutInput(desired=2, stable=None, target=1, target_ready_to_run=False, replicas=[], rollout=rolling()))
    assert out.create == []


def test_surge_one_unavailable_zero_never_drops_a_ready_replica_early():
    spec = rolling(max_surge=1, max_unavailable=0)
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True, replicas=replicas(1, 2),
                            rollout=spec))
    assert out.create == [2] and out.retire == []
    # the new one is not ready yet: nothing retired, nothing more created
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 2) + replicas(2, 1, ready=False), rollout=spec))
    assert out.create == [] and out.retire == []
    # ready: one old goes, and the next new one is created
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 2) + replicas(2, 1), rollout=spec))
    assert out.retire == ["r1-0"] and out.create == []


def test_unavailable_one_surge_zero_retires_first():
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True, replicas=replicas(1, 2),
                            rollout=rolling(max_surge=0, max_unavailable=1)))
    assert out.retire == ["r1-0"] and out.create == []


def test_unready_old_replicas_go_first_and_promotion_waits_for_the_last_old_one():
    spec = rolling()
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 1, ready=False) + replicas(1, 1, start=1) + replicas(2, 1),
                            rollout=spec))
    assert out.retire[0] == "r1-0"
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(2, 2), rollout=spec))
    assert out.promote


def test_a_target_that_never_gets_ready_or_keeps_failing_fails_the_rollout():
    spec = rolling(ready_timeout=60)
    late = replicas(2, 1, ready=False, age_s=61)
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True, replicas=replicas(1, 2) + late,
                            rollout=spec))
    assert out.fail is not None and "not ready within 60s" in out.fail and out.retire == ["r2-0"]
    crashing = replicas(2, 1, ready=False, failures=MAX_TARGET_FAILURES)
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 1) + crashing, rollout=spec))
    assert out.fail is not None and "failed 3 times" in out.fail and out.create == [1]  # the stable set topped up


def test_first_deployment_never_fails_it_keeps_trying():
    out = plan(RolloutInput(desired=1, stable=None, target=1, target_ready_to_run=True,
                            replicas=replicas(1, 1, ready=False, age_s=10_000), rollout=rolling(ready_timeout=60)))
    assert out.fail is None


def canary_spec(**slo) -> RolloutSpec:
    return RolloutSpec.model_validate({"canary": {"steps": [10, 50], "interval": 30}, "slo": slo})


def test_canary_step_gets_its_share_from_its_own_replicas_and_the_clock_starts_when_ready():
    spec = canary_spec()
    out = plan(RolloutInput(desired=4, stable=1, target=2, target_ready_to_run=True, replicas=replicas(1, 4),
                            rollout=spec, canary_step=0))
    assert out.create == [2] and out.shares == {1: 100.0}
    out = plan(RolloutInput(desired=4, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 4) + replicas(2, 1), rollout=spec, canary_step=0))
    assert out.shares == {2: 10, 1: 90} and out.start_step_clock
    out = plan(RolloutInput(desired=4, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 4) + replicas(2, 1), rollout=spec, canary_step=0, step_age_s=31,
                            canary=CanaryStats(requests=100, errors=0, p99_ms=10)))
    assert out.canary_step == 1 and "10% passed" in (out.note or "")
    out = plan(RolloutInput(desired=4, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 4) + replicas(2, 2), rollout=spec, canary_step=1, step_age_s=31,
                            canary=CanaryStats(requests=100, errors=0, p99_ms=10)))
    assert out.canary_step is None and "rolling out to all" in (out.note or "")


def test_canary_breach_fails_at_once_with_the_measurement():
    spec = canary_spec(max_error_rate=0.01, max_p99_ms=100, min_requests=20)
    base = dict(desired=2, stable=1, target=2, target_ready_to_run=True,
                replicas=replicas(1, 2) + replicas(2, 1), rollout=spec, canary_step=0, step_age_s=3)
    out = plan(RolloutInput(**base, canary=CanaryStats(requests=50, errors=5, p99_ms=10)))
    assert out.fail is not None and "error rate 10.0%" in out.fail and out.retire == ["r2-0"]
    out = plan(RolloutInput(**base, canary=CanaryStats(requests=50, errors=0, p99_ms=900)))
    assert out.fail is not None and "p99 latency 900 ms" in out.fail
    out = plan(RolloutInput(**base, canary=CanaryStats(requests=5, errors=5, p99_ms=900)))
    assert out.fail is None  # too few requests to judge


def test_an_idle_canary_moves_on_and_says_it_was_not_judged():
    out = plan(RolloutInput(desired=2, stable=1, target=2, target_ready_to_run=True,
                            replicas=replicas(1, 2) + replicas(2, 1), rollout=canary_spec(), canary_step=0,
                            step_age_s=31, canary=CanaryStats(requests=0, errors=0, p99_ms=0)))
    assert out.canary_step == 1 and "unjudged" in (out.note or "")


def test_scaling_down_retires_the_unready_and_newest_surplus():
    out = plan(RolloutInput(desired=1, stable=1, target=1, target_ready_to_run=True,
                            replicas=replicas(1, 1, age_s=100) + replicas(1, 1, ready=False, start=1, age_s=5)
                            + replicas(1, 1, start=2, age_s=1), rollout=rolling()))
    assert out.retire == ["r1-1", "r1-2"] and out.create == []
