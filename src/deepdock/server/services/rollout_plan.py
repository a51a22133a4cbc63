"""What a service's rollout does next: a pure function of what the rollout step observed (no I/O, no
clock of its own), in the scheduler's style, so every rule is a test of one call.

The model (docs/serving.md "Rollout"): a service has a *stable* revision (serving) and a *target* one
(what it should serve). When they differ a rollout is under way:

- **Rolling** (no canary): new replicas are created while the total stays within ``desired + max_surge``;
  old ones are retired (taken out of traffic, then stopped) while the ready replicas stay at least
  ``desired - max_unavailable`` - unready old ones first, since they serve nothing. Traffic goes to every
  ready replica alike. The target is promoted once it has ``desired`` ready replicas and no old one is left.
- **Canary** (``rollout.canary``): at step *i* the target gets ``steps[i]`` percent of the traffic from
  ``ceil(desired * steps[i] / 100)`` replicas of its own, beside the full stable set. A step's clock starts
  once its canary replicas are all ready; after ``interval`` the canary's own requests (measured at the
  proxy) are judged against the SLO: a breach fails the rollout, otherwise the next step, and after the
  last the rest is a rolling update. A breach with enough requests fails the step at once, without
  waiting for the interval, so a bad version is gone within seconds. A step with fewer than
  ``min_requests`` requests at its end moves on, saying so: with no traffic there is nothing to judge, and
  a service nobody calls must still be updatable.
- **Failure**: a target replica not ready within ``ready_timeout``, restarted ``MAX_TARGET_FAILURES``
  times, or an SLO breach: the target's replicas are retired and the stable revision keeps (or goes back
  to) its full traffic. With no stable revision (the first deployment) nothing is retired: the replicas
  keep trying (their jobs restart with backoff) and the service says why it is not ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deepdock.specs.service import RolloutSpec

# A target replica whose job failed this many times fails the rollout (it restarts with backoff meanwhile).
MAX_TARGET_FAILURES = 3


@dataclass(frozen=True, slots=True)
class ReplicaView:
    job_id: str
    revision: int
    # The job still runs or will run again (not stopped, not failed for good).
    alive: bool
    ready: bool
    retiring: bool = False
    # Seconds since the replica was created, and since it was last ready (None: ready now, or never yet).
    age_s: float = 0.0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class CanaryStats:
    """The target revision's own requests at the proxy since its step's clock started."""

    requests: int
    errors: int
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class RolloutInput:
    desired: int
    stable: int | None
    target: int | None
    # The target's image is built (replicas of it can be created).
    target_ready_to_run: bool
    replicas: list[ReplicaView]
    rollout: RolloutSpec
    canary_step: int | None = None
    step_age_s: float | None = None
    canary: CanaryStats | None = None


@dataclass
class RolloutPlan:
    create: list[int] = field(default_factory=list)  # one revision number per replica to create
    retire: list[str] = field(default_factory=list)  # job ids: out of traffic now, stopped once drained
    # Traffic share per revision in percent; None: every ready replica alike.
    shares: dict[int, float] | None = None
    promote: bool = False
    fail: str | None = None
    canary_step: int | None = None
    start_step_clock: bool = False
    note: str | None = None


def plan(inp: RolloutInput) -> RolloutPlan:
    out = RolloutPlan(canary_step=inp.canary_step)
    target = inp.target
    if target is None:
        return out
    live = [r for r in inp.replicas if r.alive and not r.retiring]
    new = [r for r in live if r.revision == target]
    old = [r for r in live if r.revision != target]
    if inp.stable is not None and inp.stable != target:
        reason = _failure(inp, new)
        if reason is not None:
            out.fail = reason
            out.retire = [r.job_id for r in new]
            out.canary_step = None
            out.create = _top_up(inp.stable, inp.desired, [r for r in old if r.revision == inp.stable])
            return out
        if inp.canary_step is not None and inp.rollout.canary is not None:
            return _canary(inp, new, old, out)
    return _rolling(inp, new, old, out)


def _failure(inp: RolloutInput, new: list[ReplicaView]) -> str | None:
    timeout = inp.rollout.ready_timeout
    for r in new:
        if r.failures >= MAX_TARGET_FAILURES:
            return f"replica {r.job_id} of revision {r.revision} failed {r.failures} times"
        if not r.ready and r.age_s > timeout:
            return f"replica {r.job_id} of revision {r.revision} was not ready within {timeout:g}s"
    stats, slo = inp.canary, inp.rollout.slo
    if stats is not None and stats.requests >= slo.min_requests:
        if stats.error_rate > slo.max_error_rate:
            return (f"canary error rate {stats.error_rate:.1%} ({stats.errors} of {stats.requests} requests) "
                    f"is above the SLO's {slo.max_error_rate:.1%}")
        if stats.p99_ms > slo.max_p99_ms:
            return (f"canary p99 latency {stats.p99_ms:.0f} ms over {stats.requests} requests is above the SLO's "
                    f"{slo.max_p99_ms:g} ms")
    return None


def _top_up(revision: int, desired: int, live: list[ReplicaView]) -> list[int]:
    return [revision] * max(0, desired - len(live))


def _canary(inp: RolloutInput, new: list[ReplicaView], old: list[ReplicaView], out: RolloutPlan) -> RolloutPlan:
    canary = inp.rollout.canary
    assert canary is not None and inp.canary_step is not None and inp.stable is not None and inp.target is not None
    percent = canary.steps[inp.canary_step]
    wanted = max(1, math.ceil(inp.desired * percent / 100))
    if inp.target_ready_to_run:
        out.create += [inp.target] * max(0, wanted - len(new))
    stable_live = [r for r in old if r.revision == inp.stable]
    out.create += _top_up(inp.stable, inp.desired, stable_live)
    out.retire += [r.job_id for r in old if r.revision != inp.stable]  # leftovers of an earlier rollout
    ready_new = sum(r.ready for r in new)
    out.shares = {inp.target: percent, inp.stable: 100 - percent} if ready_new else {inp.stable: 100.0}
    if ready_new < wanted:
        return out
    if inp.step_age_s is None:
        out.start_step_clock = True
        return out
    if inp.step_age_s < canary.interval:
        return out
    stats = inp.canary
    judged = stats.requests if stats is not None else 0
    note = "" if judged >= inp.rollout.slo.min_requests else (
        f" (unjudged: {judged} requests, fewer than the SLO's min_requests {inp.rollout.slo.min_requests})")
    if inp.canary_step + 1 < len(canary.steps):
        out.canary_step = inp.canary_step + 1
        out.note = f"canary step {percent:g}% passed{note}; next {canary.steps[out.canary_step]:g}%"
    else:
        out.canary_step = None
        out.note = f"canary step {percent:g}% passed{note}; rolling out to all replicas"
    out.start_step_clock = False
    return out


def _rolling(inp: RolloutInput, new: list[ReplicaView], old: list[ReplicaView], out: RolloutPlan) -> RolloutPlan:
    assert inp.target is not None
    desired, spec = inp.desired, inp.rollout
    if inp.target_ready_to_run:
        room = desired + spec.max_surge - len(new) - len(old)
        if not old:
            room = desired - len(new)
        out.create += [inp.target] * max(0, min(desired - len(new), room))
    # Surplus target replicas (scaled down): the unready and the newest go first.
    surplus = len(new) - desired
    if surplus > 0:
        for r in sorted(new, key=lambda r: (r.ready, r.age_s))[:surplus]:
            out.retire.append(r.job_id)
    ready_new = sum(r.ready for r in new if r.job_id not in out.retire)
    ready_old = sum(r.ready for r in old)
    floor = desired - spec.max_unavailable
    for r in sorted(old, key=lambda r: r.ready):
        if not r.ready:
            out.retire.append(r.job_id)
        elif ready_new + ready_old - 1 >= floor or ready_new >= desired:
            out.retire.append(r.job_id)
            ready_old -= 1
    remaining_old = [r for r in old if r.job_id not in out.retire]
    if ready_new >= desired and not remaining_old and inp.stable != inp.target:
        out.promote = True
    elif inp.stable is None and ready_new > 0:
        out.promote = True  # the first revision serves as soon as one replica is ready
    return out
