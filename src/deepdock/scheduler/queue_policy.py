"""One scheduling cycle, shared by every policy: rank the queue, place in order, preempt, reserve, explain.

A policy only says how jobs are ranked and who may preempt whom (``QueuePolicy`` hooks); this module
turns that into decisions without over-committing:

* jobs are tried in rank order against a working ``Allocator``; each Place takes its capacity at once;
* strict policies stop at the first job that does not fit (head-of-line blocking), the others backfill;
* with reservations, the best-ranked job that cannot start earmarks the nodes that will hold it soonest;
  lower-ranked jobs may not use them (or, when every runtime is estimated, only if they end before the
  reservation's shadow time, EASY-style), so a stream of small jobs cannot starve a large gang;
* a preemptor takes the cheapest minimal set of victims; the nodes it will use are held for the rest of
  the cycle because the victims are still running until the caller stops them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from deepdock.scheduler.capacity import Allocator
from deepdock.scheduler.fairshare import FairShare
from deepdock.scheduler.reasons import explain_waits
from deepdock.scheduler.types import (
    ClusterState,
    Decision,
    JobRequest,
    Place,
    Preempt,
    Resources,
    RunningJob,
)

Rank = tuple[float, ...]


@dataclass(slots=True)
class Reservation:
    job_id: str
    nodes: frozenset[str]
    shadow_time: float  # when the reserved job is expected to start; inf without estimates


@dataclass(slots=True)
class WaitNote:
    """Why a job is not starting, recorded during the cycle and turned into a PendingReason after it."""

    job: JobRequest
    kind: str  # "blocked" | "reserved" | "behind_reservation" | "preempting" | "no_fit"
    detail: dict[str, object] = field(default_factory=dict)


class CycleContext:
    """What a policy's hooks may look at during one cycle."""

    def __init__(self, state: ClusterState, now: float, queue: Sequence[JobRequest] = ()) -> None:
        self.state = state
        self.now = now
        self.queue = queue
        self._shares: FairShare | None = None
        # Whatever a policy derives once per cycle from state and queue (keyed by the policy).
        self.memo: dict[str, object] = {}

    @property
    def shares(self) -> FairShare:
        # Built on first use: policies that ignore fair share do not pay for it.
        if self._shares is None:
            self._shares = FairShare(self.state)
        return self._shares

    def charge(self, job: JobRequest) -> None:
        if self._shares is not None:
            self._shares.charge_job(job)

    def discharge(self, rj: RunningJob) -> None:
        if self._shares is not None:
            self._shares.discharge(rj)


class QueuePolicy:
    """Base of every built-in policy. Subclasses override ``rank`` and, if preemptive, ``may_preempt``."""

    name = "base"
    strict = False        # head-of-line blocking: nothing starts after the first job that cannot
    preemptive = False
    reservations = False  # the best-ranked blocked job earmarks nodes (anti-starvation for gangs)
    clairvoyant = False   # needs runtime estimates to rank (the simulator gives them only to these)
    # A later-ranked job may preempt only a subset of what an earlier-ranked one may (without quotas);
    # lets a cycle skip preemption searches that an earlier, smaller job already failed.
    preempt_monotone = True

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        return (job.submit_time,)

    def rank_many(self, jobs: Sequence[JobRequest], ctx: CycleContext) -> list[Rank]:
        """Ranks of a whole queue (override for speed: it runs once per job per cycle)."""
        rank = self.rank
        return [rank(j, ctx) for j in jobs]

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        return False

    def may_reserve(self, job: JobRequest, ctx: CycleContext) -> bool:
        """Whether this blocked job (the best-ranked one) should earmark nodes now."""
        return True

    def preempt_reason(self, job: JobRequest, victims: list[RunningJob]) -> str:
        return f"job {job.id} outranks {', '.join(v.id for v in victims)} under the {self.name} policy"

    def schedule(
        self, state: ClusterState, queue: Sequence[JobRequest], now: float, *, explain: bool = True
    ) -> list[Decision]:
        return Cycle(self, state, queue, now).run(explain)


def _victim_cost(rj: RunningJob) -> tuple[float, float, str]:
    # Lose the least work: least attained GPU time first, then the most recently started.
    return (rj.attained_gpu_s, -rj.start_time, rj.id)


class Cycle:
    def __init__(self, policy: QueuePolicy, state: ClusterState, queue: Sequence[JobRequest], now: float):
        self.policy = policy
        self.state = state
        self.now = now
        self.ctx = CycleContext(state, now, queue)
        self.alloc = Allocator(state.nodes)
        # The nodes each spread group's members already use (running, and placed in this cycle).
        self.spread_nodes: dict[str, set[str]] = {}
        for rj in state.running:
            if rj.spread_group is not None:
                self.spread_nodes.setdefault(rj.spread_group, set()).update(p.node for p in rj.placements)
        keys = policy.rank_many(queue, self.ctx)
        order = sorted(range(len(queue)), key=lambda i: (keys[i], queue[i].submit_time, queue[i].id))
        self.ranked = [queue[i] for i in order]
        self.held: set[str] = set()        # nodes claimed by a preemptor this cycle
        self.victims_taken: set[str] = set()
        self.reservation: Reservation | None = None
        # Shapes that failed to place / to preempt in this cycle. Capacity only shrinks and blocked sets
        # only grow during a cycle, so a job at least as large as a failed one fails too.
        self.failed_place: list[tuple[JobRequest, bool]] = []
        self.failed_preempt: list[JobRequest] = []
        self.failed_shape: dict[tuple[object, ...], bool] = {}  # exact-shape cache of failed_place

    # ---- the cycle ---------------------------------------------------------------------------
    def run(self, explain: bool) -> list[Decision]:
        out: list[Decision] = []
        notes: list[WaitNote] = []
        policy, alloc = self.policy, self.alloc
        head_blocked = False
        can_preempt = policy.preemptive or bool(self.state.quotas)
        # Without explanations, stop as soon as the smallest request in the queue can neither start nor
        # preempt: every later job is at least as large (and, by monotonicity, may preempt no more).
        smallest = None if explain or not self.ranked else _smallest(self.ranked)
        monotone = policy.preempt_monotone and not self.state.quotas
        has_estimates = smallest is not None and any(j.runtime_estimate is not None for j in self.ranked)
        for job in self.ranked:
            if not explain and not can_preempt and job.resources.gpus > 0 and alloc.no_gpu_free():
                continue  # saturated: no GPU job can start and nobody needs telling why
            if head_blocked:
                if not explain:
                    break
                notes.append(WaitNote(job, "blocked"))
                continue
            blocked = self._blocked_for(job)
            reserved = blocked is not self.held
            placed = None
            if not self._place_known_to_fail(job, reserved):
                group = job.spread_group
                avoid: set[str] | frozenset[str] = (self.spread_nodes.get(group, frozenset()) if group is not None
                                                    else frozenset())
                placed = alloc.place(job.resources, job.replicas, job.gpu_type, job.spread, blocked, job.gpu_memory,
                                     job.one_node, avoid)
                if placed is not None and group is not None:
                    self.spread_nodes.setdefault(group, set()).update(p.node for p in placed)
                if placed is None:
                    self.failed_place.append((job, reserved))
                    self.failed_shape[_shape(job)] = reserved
            if placed is not None:
                out.append(Place(job.id, placed))
                self.ctx.charge(job)
                continue
            if can_preempt and self.state.running and not self._preempt_known_to_fail(job):
                decision = self._try_preempt(job, notes)
                if decision is not None:
                    out.append(decision)
                    continue
                if notes and notes[-1].job is job:  # waiting for stopping victims
                    continue
                self.failed_preempt.append(job)
            if smallest is not None and (monotone or not can_preempt) and _covers(job, smallest) \
                    and (self.reservation is None or not has_estimates):
                break
            note = WaitNote(job, "no_fit")
            if blocked and explain and self._fits_without(job, blocked):
                note.kind = "behind_reservation"
                note.detail["holder"] = self.reservation.job_id if self.reservation else None
            elif policy.reservations and self.reservation is None and policy.may_reserve(job, self.ctx) and (
                    not self.state.quotas or self.ctx.shares.within_quota(job)):
                # A job that would borrow beyond its quota does not get to earmark others' capacity.
                self.reservation = self._reserve(job)
                if self.reservation is not None:
                    note.kind = "reserved"
                    note.detail["nodes"] = sorted(self.reservation.nodes)
            if policy.strict:
                head_blocked = True
            notes.append(note)
        if explain:
            out.extend(explain_waits(notes, alloc, self.ctx.shares, self.state))
        return out

    def _reserved_for(self, job: JobRequest) -> frozenset[str]:
        """Nodes earmarked by the reservation that this job may not use."""
        res = self.reservation
        if res is None:
            return frozenset()
        estimate = job.runtime_estimate
        if estimate is not None and self.now + max(0.0, estimate - job.executed) <= res.shadow_time:
            return frozenset()  # ends before the reserved job can start: EASY backfill
        return res.nodes

    def _blocked_for(self, job: JobRequest) -> frozenset[str] | set[str]:
        reserved = self._reserved_for(job)
        if not reserved:
            return self.held
        return self.held | reserved if self.held else reserved

    def _fits_without(self, job: JobRequest, blocked: frozenset[str] | set[str]) -> bool:
        placed = self.alloc.place(job.resources, job.replicas, job.gpu_type, job.spread, self.held,
                                  job.gpu_memory, job.one_node)
        if placed is None:
            return False
        self.alloc.release(job.resources, placed)
        return True

    def _place_known_to_fail(self, job: JobRequest, reserved: bool) -> bool:
        key = _shape(job)
        hit = self.failed_shape.get(key)
        if hit is not None and (not hit or hit == reserved):
            return True
        for f, f_reserved in self.failed_place:
            if (not f_reserved or f_reserved == reserved) and _covers(f, job):
                self.failed_shape[key] = reserved
                return True
        return False

    # ---- preemption --------------------------------------------------------------------------
    def _preempt_known_to_fail(self, job: JobRequest) -> bool:
        if not self.policy.preempt_monotone or self.state.quotas:
            return False
        return any(_covers(f, job) for f in self.failed_preempt)

    def _candidates(self, job: JobRequest) -> list[RunningJob]:
        policy, ctx = self.policy, self.ctx
        reclaim = bool(self.state.quotas) and ctx.shares.within_quota(job)
        stopping: list[RunningJob] = []
        chosen: list[RunningJob] = []
        for rj in self.state.running:
            if rj.id in self.victims_taken:
                continue
            if rj.stopping:
                stopping.append(rj)
            elif rj.preemptible and (
                policy.may_preempt(job, rj, ctx)
                or (reclaim and rj.project != job.project and ctx.shares.borrowing(rj.project))
            ):
                chosen.append(rj)
        chosen.sort(key=_victim_cost)
        return stopping + chosen

    def _try_preempt(self, job: JobRequest, notes: list[WaitNote]) -> Decision | None:
        """Find the cheapest minimal victim set. The allocator then holds the future state (victims gone,
        this job placed) and the nodes involved are held: nothing else is *placed* on them this cycle
        because the victims still run, but a later preemptor may claim what this one leaves over."""
        alloc, held = self.alloc, self.held
        r, n = job.resources, job.replicas
        reserved = self._reserved_for(job)
        if held:
            # Capacity freed by this cycle's earlier victims (held nodes) may be enough on its own.
            placed = alloc.place(r, n, job.gpu_type, job.spread, reserved, job.gpu_memory, job.one_node)
            if placed is not None:
                held.update(p.node for p in placed)
                self.ctx.charge(job)
                notes.append(WaitNote(job, "preempting", {"stopping": []}))
                return None
        cands = self._candidates(job)
        if not cands or not self._enough_gpus(job, cands):
            return None
        chosen: list[RunningJob] = []
        placed = None
        for v in cands:
            alloc.release(v.resources, v.placements)
            chosen.append(v)
            placed = alloc.place(r, n, job.gpu_type, job.spread, reserved, job.gpu_memory, job.one_node)
            if placed is not None:
                break
        if placed is None:
            for v in chosen:
                alloc.commit(v.resources, v.placements)
            return None
        # Minimal set: drop victims (most work first) that turn out not to be needed.
        for v in reversed(chosen[:-1]):
            if v.stopping:
                continue
            alloc.release(r, placed)
            alloc.commit(v.resources, v.placements)
            again = alloc.place(r, n, job.gpu_type, job.spread, reserved, job.gpu_memory, job.one_node)
            if again is not None:
                chosen.remove(v)
                placed = again
            else:
                alloc.release(v.resources, v.placements)
                placed = alloc.place(r, n, job.gpu_type, job.spread, reserved, job.gpu_memory, job.one_node)
                assert placed is not None  # the same capacity as before the check
        for v in chosen:
            self.victims_taken.add(v.id)
            self.ctx.discharge(v)
            held.update(p.node for p in v.placements)
        held.update(p.node for p in placed)
        self.ctx.charge(job)
        live = [v for v in chosen if not v.stopping]
        if not live:
            notes.append(WaitNote(job, "preempting", {"stopping": [v.id for v in chosen]}))
            return None
        return Preempt(job.id, [v.id for v in live], self.policy.preempt_reason(job, live))

    def _enough_gpus(self, job: JobRequest, cands: list[RunningJob]) -> bool:
        """Cheap necessary condition before trying placements: free + victims' GPUs cover the job."""
        need = job.resources.gpus * job.replicas
        if need <= 0:
            return True
        have = sum(v.resources.gpus * v.replicas for v in cands)
        if have >= need:
            return True
        free = sum(sum(nv.gpu_free) for nv in self.alloc.nodes.values())
        return have + free + 1e-9 >= need

    # ---- reservations ------------------------------------------------------------------------
    def _reserve(self, job: JobRequest) -> Reservation | None:
        """Earmark the nodes that can hold the job soonest (fewest GPUs still busy when nothing is
        estimated); the earmark keeps other jobs off them until the job starts."""
        r, need = job.resources, job.replicas
        ends: dict[str, list[tuple[float, RunningJob]]] = {}
        for rj in self.state.running:
            est = rj.runtime_estimate
            end = self.now + max(0.0, est - rj.executed) if est is not None else math.inf
            for p in {p.node for p in rj.placements}:
                ends.setdefault(p, []).append((end, rj))
        options: list[tuple[float, float, str, int]] = []
        for name, nv in self.alloc.nodes.items():
            if name in self.held:
                continue
            usable = [i for i in range(len(nv.gpu_free)) if nv.eligible(i, job.gpu_type, job.gpu_memory)]
            cap = _replicas_when_empty(nv.cpus, nv.memory, len(usable), r)
            if cap == 0:
                continue
            busy_gpus = sum(1.0 - nv.gpu_free[i] for i in usable)
            ready = max((e for e, _ in ends.get(name, [])), default=self.now)
            options.append((ready, busy_gpus, name, cap))
        options.sort()
        picked: list[str] = []
        shadow = self.now
        for ready, _busy, name, cap in options:
            picked.append(name)
            shadow = max(shadow, ready)
            need -= cap
            if need <= 0:
                return Reservation(job.id, frozenset(picked), shadow)
        return None


def _smallest(jobs: Sequence[JobRequest]) -> JobRequest:
    """A synthetic single-replica request no larger than any of ``jobs`` in every resource."""
    cpus = min(j.resources.cpus for j in jobs)
    memory = min(j.resources.memory for j in jobs)
    gpus = min(j.resources.gpus for j in jobs)
    return JobRequest("(smallest)", Resources(cpus, memory, gpus), gpu_type=None)


def _shape(job: JobRequest) -> tuple[object, ...]:
    r = job.resources
    return (r.cpus, r.memory, r.gpus, job.replicas, job.gpu_type, job.spread, job.gpu_memory, job.one_node)


def _gpus_le(a: Resources, b: Resources) -> bool:
    """Does failing to find ``a``'s GPUs imply failing to find ``b``'s?"""
    if a.gpus <= 0:
        return True
    if a.gpu_share:
        return b.gpus >= a.gpus
    return b.gpus >= a.gpus and not b.gpu_share


def _covers(failed: JobRequest, job: JobRequest) -> bool:
    """Is ``job`` at least as hard to place as ``failed`` (same or stricter type and GPU memory floor,
    no smaller in any resource, and at least as many replicas — one failed replica covers any gang)?"""
    if failed is job:
        return True
    a, b = failed.resources, job.resources
    if failed.gpu_type is not None and failed.gpu_type != job.gpu_type:
        return False
    if failed.gpu_memory and (job.gpu_memory or 0) < failed.gpu_memory:
        return False
    if failed.replicas != 1 and (failed.replicas > job.replicas or a != b or failed.spread != job.spread):
        return False
    return a.cpus <= b.cpus and a.memory <= b.memory and _gpus_le(a, b)


def _replicas_when_empty(cpus: float, memory: int, gpus: int, r: Resources) -> int:
    k = 1 << 30
    if r.cpus > 0:
        k = min(k, int(cpus // r.cpus + 1e-9))
    if r.memory > 0:
        k = min(k, memory // r.memory)
    if r.gpus >= 1:
        k = min(k, gpus // r.whole_gpus)
    elif r.gpus > 0:
        k = min(k, int(gpus * (1 // r.gpus)) if gpus else 0)
    return k
