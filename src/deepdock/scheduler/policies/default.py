"""deepdock's default policy: non-clairvoyant, preemptive, fair, gang-safe.

Ranking, best first:
1. priority class (higher first; higher classes may preempt lower ones);
2. jobs within their project's guaranteed quota before jobs that would borrow;
3. starving jobs (waited ``STARVE_FACTOR`` × what they have run) — nothing waits forever;
4. expected completion per unit of investment: the Gittins index of the job's attained GPU time under
   the distribution of GPU time that *finished* jobs of its size class needed (``ClusterState.history``,
   learned online; see ``scheduler/history.py``), blended with its cohort's once members of its batch
   have finished (``scheduler/cohort.py``). Until enough jobs have finished (or when the caller
   keeps no history) this falls back to least attained GPU time on a fine log scale (2D-LAS over
   GPUs × time), which the Gittins index reduces to when sizes have a decreasing hazard rate;
5. dominant-resource fair share of the project, then of the user (DRF);
6. more attained GPU time first: among jobs the index cannot tell apart (typically long jobs past
   everything the history has seen, whose index holds), finish the one furthest along;
7. submission time.

Never uses runtime estimates or durations: only attained GPU time and what completed jobs attained.

Within a priority class a job preempts a running one only when its index is ``PREEMPT_INDEX_RATIO``
times the victim's (LAS fallback: the victim is ``PREEMPT_LEVEL_GAP`` levels, a factor of 2 each, above):
the hysteresis stops two jobs of similar rank from trading places at every event and paying
checkpoint-restart each time.
The best-ranked job that cannot start (typically a large gang) reserves nodes after waiting
``RESERVE_AFTER_WAIT_S``, so small jobs backfill around it without starving it; with runtime estimates,
backfill onto reserved nodes is EASY-style.

Why a learned Gittins index rather than LAS levels (Philly replay, 0.25 capacity, mean JCT, SRTF with
oracle durations 23,318 s, Tiresias 39,324 s; see docs/benchmarks.md): plain LAS 43,083 s; the index per
size class with a 1/a tail and an index ratio of 8 for preemption, 37,800 s. LAS shares GPUs
round-robin among long jobs, so in busy VCs they all finish late; the index keeps a job running while it
is likely close to a typical length of its class. Steps since, each a whole default-policy replay:
- cohorts from finished members only: 39,330 s (worse: the first members to finish are the short ones);
  with unfinished members as censored observations (Kaplan-Meier): 38,384 s;
- the tail holding its last value instead of decaying like 1/a: 37,500 s (37,658 s without cohorts);
- preemption at an index ratio of 2: 36,866 s; of 1.25: 35,118 s (the Gittins rule proper is 1; the
  margin stops two jobs from trading places at every bin edge; the sim charges every restart);
- at ratio 1.25, cohorts are worth about 3% (36,821 s without, 35,934 s with, both with a 4 h starvation
  floor, which itself did not help);
- ties broken by more attained GPU time instead of submission order: 33,733 s.
Not adopted: dropping starvation protection gave 33,877 s before the tie-break and gains nothing after it,
and without it nothing bounds how long a job that ran a little waits behind a backlog of fresh ones;
dropping reservations gains ~1–3% (within the replay's noise) but loses the bound on a gang's wait. Why
the rest of the gap to SRTF is not the policy's to close: benchmarks/bench_philly_predictor.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deepdock.scheduler.history import AttainedHistory, attained_bin, size_class
from deepdock.scheduler.policies.baselines import starving
from deepdock.scheduler.queue_policy import CycleContext, QueuePolicy, Rank
from deepdock.scheduler.types import JobRequest, RunningJob, gpu_time_rate

# Attained GPU time below this (GPU-seconds) is level 0; each level above is twice that.
LAS_BASE_GPU_S = 600.0
# A waiting job preempts a running one of equal priority only this many levels below it.
PREEMPT_LEVEL_GAP = 3
# With a Gittins index: only if its index is this many times the running job's.
PREEMPT_INDEX_RATIO = 1.25
# A blocked job earmarks nodes only after waiting this long (seconds): earmarked nodes idle while they
# drain, which costs every other job; preemption usually starts a fresh gang sooner, and the reservation
# is the backstop that bounds how long any gang can be passed over.
RESERVE_AFTER_WAIT_S = 12 * 3600.0
# Waiting this many times the executed time promotes a job ahead of every other of its priority.
STARVE_FACTOR = 20.0
# Under the Gittins index a job that never ran may rank low (a big gang of a class that runs long), so
# it, too, is promoted: after STARVE_FACTOR × this many seconds of waiting.
STARVE_MIN_EXECUTED_S = 3600.0


def las_level(attained_gpu_s: float) -> int:
    if attained_gpu_s < LAS_BASE_GPU_S:
        return 0
    return 1 + int(math.log2(attained_gpu_s / LAS_BASE_GPU_S))


def _history(ctx: CycleContext) -> AttainedHistory | None:
    h = ctx.state.history
    return h if h is not None and h.ready else None


def _unfinished_by_cohort(ctx: CycleContext, hist: AttainedHistory) -> dict[str, tuple[int, ...]]:
    """GPU-time bins reached by members of cohorts that have finished members, and that are running or
    were preempted: censored observations of their cohort's distribution (``AttainedHistory.index``).
    Built once per cycle."""
    memo = ctx.memo.get("unfinished")
    if memo is None:
        seen: dict[str, list[int]] = {}
        members: list[JobRequest | RunningJob] = [*ctx.state.running, *ctx.queue]
        for member in members:
            if member.attained_gpu_s > 0 and member.cohort is not None and hist.has_cohort(member.cohort):
                seen.setdefault(member.cohort, []).append(attained_bin(member.attained_gpu_s))
        memo = ctx.memo["unfinished"] = {c: tuple(sorted(bins)) for c, bins in seen.items()}
    return memo  # type: ignore[return-value]


def _index(hist: AttainedHistory, job: JobRequest | RunningJob, ctx: CycleContext) -> float:
    """The job's Gittins index, memoized per cycle: it depends only on the size class, the GPU-time bin
    and the cohort (if one of its members finished), which most queued jobs share."""
    memo: dict[tuple[int, int, str | None], float] | None = ctx.memo.get("index")  # type: ignore[assignment]
    if memo is None:
        memo = ctx.memo["index"] = {}
    rate = gpu_time_rate(job.resources, job.replicas)
    attained = job.attained_gpu_s
    cohort = job.cohort if job.cohort is not None and hist.has_cohort(job.cohort) else None
    key = (size_class(rate), attained_bin(attained) if attained > 0 else 0, cohort)
    value = memo.get(key)
    if value is None:
        unfinished = _unfinished_by_cohort(ctx, hist).get(cohort, ()) if cohort is not None else ()
        value = memo[key] = hist.index(rate, attained, cohort, unfinished)
    return value


class DefaultPolicy(QueuePolicy):
    name = "default"
    preemptive = True
    reservations = True

    def _level(self, job: JobRequest, now: float) -> int:
        if job.executed <= 0:
            return 0  # never ran: least attained GPU time, and it cannot be starving by this rule
        return -1 if starving(job, now, STARVE_FACTOR) else las_level(job.attained_gpu_s)

    @staticmethod
    def _starving(job: JobRequest, now: float) -> bool:
        since = job.last_stop_time if job.last_stop_time is not None else job.submit_time
        return now - since >= STARVE_FACTOR * max(job.executed, STARVE_MIN_EXECUTED_S)

    def _score(self, job: JobRequest, ctx: CycleContext, hist: AttainedHistory | None) -> float:
        """Lower is sooner: the LAS level, or minus the Gittins index; -inf when starving."""
        if hist is None:
            return self._level(job, ctx.now)
        if self._starving(job, ctx.now):
            return -math.inf
        return -_index(hist, job, ctx)

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        shares = ctx.shares
        borrowing = 1 if shares.quotas and not shares.within_quota(job) else 0
        return (
            -job.priority,
            borrowing,
            self._score(job, ctx, _history(ctx)),
            shares.project_share(job.project),
            shares.user_share(job.project, job.user),
            -job.attained_gpu_s,
            job.submit_time,
        )

    def rank_many(self, jobs: Sequence[JobRequest], ctx: CycleContext) -> list[Rank]:
        if ctx.state.quotas or len({(j.project, j.user) for j in jobs}) > 1:
            return [self.rank(j, ctx) for j in jobs]
        # One tenant and no quotas: the fair-share terms are equal for everyone, so skip computing them.
        hist, score = _history(ctx), self._score
        return [(-j.priority, 0, score(j, ctx, hist), 0.0, 0.0, -j.attained_gpu_s, j.submit_time)
                for j in jobs]

    def may_reserve(self, job: JobRequest, ctx: CycleContext) -> bool:
        since = job.last_stop_time if job.last_stop_time is not None else job.submit_time
        return ctx.now - since >= RESERVE_AFTER_WAIT_S

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        if victim.priority != job.priority:
            return victim.priority < job.priority
        hist = _history(ctx)
        if hist is None:
            return las_level(victim.attained_gpu_s) >= self._level(job, ctx.now) + PREEMPT_LEVEL_GAP
        if self._starving(job, ctx.now) and las_level(victim.attained_gpu_s) >= PREEMPT_LEVEL_GAP - 1:
            return True  # as in the LAS fallback, where starving is level -1
        return _index(hist, job, ctx) >= PREEMPT_INDEX_RATIO * _index(hist, victim, ctx)

    def preempt_reason(self, job: JobRequest, victims: list[RunningJob]) -> str:
        parts = []
        for v in victims:
            if v.priority < job.priority:
                parts.append(f"{v.id} has lower priority ({v.priority} < {job.priority})")
            else:
                parts.append(f"{v.id} has attained {v.attained_gpu_s:.0f} GPU-s "
                             f"vs {job.attained_gpu_s:.0f}")
        return f"job {job.id} preempts: " + "; ".join(parts)
