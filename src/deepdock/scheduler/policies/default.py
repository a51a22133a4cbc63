"""deepdock's default policy: non-clairvoyant, preemptive, fair, gang-safe.

Ranking, best first:
1. priority class (higher first; higher classes may preempt lower ones);
2. starving jobs (waited ``STARVE_FACTOR`` × what they have run) — nothing waits forever;
3. jobs within their project's guaranteed quota before jobs that would borrow;
4. least attained service on a fine log scale (2D-LAS over GPUs × time): with heavy-tailed runtimes, the
   less a job has run, the sooner it is likely to end, so this approximates shortest-remaining-first
   without needing estimates;
5. dominant-resource fair share of the project, then of the user (DRF);
6. submission time.

Within a priority class a job preempts a running one only when the victim's service level is at least
``PREEMPT_LEVEL_GAP`` levels (a factor of 2 each) above its own: the hysteresis stops two jobs of similar
service from trading places at every event and paying checkpoint-restart each time.
The best-ranked job that cannot start (typically a large gang) reserves nodes, so small jobs backfill
around it without starving it; with runtime estimates, backfill onto reserved nodes is EASY-style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deepdock.scheduler.engine import CycleContext, QueuePolicy, Rank
from deepdock.scheduler.policies.baselines import starving
from deepdock.scheduler.types import JobRequest, RunningJob

# Service below this (GPU-seconds) is level 0; each level above is twice the service.
LAS_BASE_GPU_S = 600.0
# A waiting job preempts a running one of equal priority only this many levels below it.
PREEMPT_LEVEL_GAP = 3
# A blocked job earmarks nodes only after waiting this long (seconds): earmarked nodes idle while they
# drain, which costs every other job; preemption usually starts a fresh gang sooner, and the reservation
# is the backstop that bounds how long any gang can be passed over.
RESERVE_AFTER_WAIT_S = 12 * 3600.0
# Waiting this many times the executed time promotes a job ahead of every other of its priority.
STARVE_FACTOR = 20.0


def las_level(attained_gpu_s: float) -> int:
    if attained_gpu_s < LAS_BASE_GPU_S:
        return 0
    return 1 + int(math.log2(attained_gpu_s / LAS_BASE_GPU_S))


class DefaultPolicy(QueuePolicy):
    name = "default"
    preemptive = True
    reservations = True

    def _level(self, job: JobRequest, now: float) -> int:
        if job.executed <= 0:
            return 0  # never ran: least attained service, and it cannot be starving by this rule
        return -1 if starving(job, now, STARVE_FACTOR) else las_level(job.attained_service)

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        shares = ctx.shares
        borrowing = 1 if shares.quotas and not shares.within_quota(job) else 0
        return (
            -job.priority,
            borrowing,
            self._level(job, ctx.now),
            shares.project_share(job.project),
            shares.user_share(job.project, job.user),
            job.submit_time,
        )

    def rank_many(self, jobs: Sequence[JobRequest], ctx: CycleContext) -> list[Rank]:
        if ctx.state.quotas or len({(j.project, j.user) for j in jobs}) > 1:
            return [self.rank(j, ctx) for j in jobs]
        # One tenant and no quotas: the fair-share terms are equal for everyone, so skip computing them.
        now = ctx.now
        return [(-j.priority, 0, self._level(j, now), 0.0, 0.0, j.submit_time) for j in jobs]

    def may_reserve(self, job: JobRequest, ctx: CycleContext) -> bool:
        since = job.last_stop_time if job.last_stop_time is not None else job.submit_time
        return ctx.now - since >= RESERVE_AFTER_WAIT_S

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        if victim.priority != job.priority:
            return victim.priority < job.priority
        return las_level(victim.attained_service) >= self._level(job, ctx.now) + PREEMPT_LEVEL_GAP

    def preempt_reason(self, job: JobRequest, victims: list[RunningJob]) -> str:
        parts = []
        for v in victims:
            if v.priority < job.priority:
                parts.append(f"{v.id} has lower priority ({v.priority} < {job.priority})")
            else:
                parts.append(f"{v.id} has attained {v.attained_service:.0f} GPU-s of service "
                             f"vs {job.attained_service:.0f}")
        return f"job {job.id} preempts: " + "; ".join(parts)
