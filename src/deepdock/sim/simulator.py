"""Event-driven simulator: replays a trace against the SAME policy objects the server uses.

Time is simulated. The policy is called once per instant at which something happened (arrivals and
completions at the same time are batched), never on a tick; after a Preempt the victims stop at once and
the policy is called again at the same instant so the preemptor can start. A preempted job resumes later
paying a checkpoint-restart penalty (``restart_penalty``), which is added to its remaining work.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from deepdock.scheduler.cohort import CohortTracker, cohort_key
from deepdock.scheduler.fit import can_ever_fit
from deepdock.scheduler.history import AttainedHistory
from deepdock.scheduler.types import (
    EPSILON,
    GPU,
    ClusterState,
    JobRequest,
    NodeState,
    Place,
    Policy,
    Preempt,
    ReplicaPlacement,
    Resources,
    RunningJob,
    gpu_time_rate,
)
from deepdock.sim.cluster import ClusterSpec
from deepdock.sim.philly import restart_penalty as philly_restart_penalty
from deepdock.sim.trace import TraceJob

# Bound on policy calls at one instant (each call after the first follows a preemption).
MAX_CALLS_PER_INSTANT = 64


@dataclass(slots=True)
class JobRecord:
    id: str
    submit_time: float
    duration: float
    gpus: float
    start_time: float | None = None       # first start
    end_time: float | None = None
    placements: list[ReplicaPlacement] = field(default_factory=list)  # first attempt's placements
    starts: list[float] = field(default_factory=list)  # every attempt's start time
    executed: float = 0.0                 # seconds run, restart penalties included
    preemptions: int = 0
    rejected: str | None = None           # could never fit the cluster (the server would refuse it)


@dataclass(slots=True)
class SimResult:
    policy: str
    jobs: dict[str, JobRecord]
    total_gpus: int
    policy_calls: int = 0

    @property
    def preemptions(self) -> int:
        return sum(r.preemptions for r in self.jobs.values())

    @staticmethod
    def merge(policy: str, parts: Sequence[SimResult]) -> SimResult:
        """Combine independent partitions (e.g. Philly's VCs, each its own cluster)."""
        jobs: dict[str, JobRecord] = {}
        for p in parts:
            jobs.update(p.jobs)
        return SimResult(policy, jobs, sum(p.total_gpus for p in parts), sum(p.policy_calls for p in parts))


@dataclass(slots=True)
class _Run:
    trace: TraceJob
    rj: RunningJob
    seg_start: float
    executed_before: float
    attained_before: float
    work: float        # duration + restart penalties so far
    token: int


def _copy_nodes(nodes: Sequence[NodeState]) -> list[NodeState]:
    return [
        NodeState(n.name, n.cpus, n.memory, [GPU(g.index, g.type, g.memory, g.free_share) for g in n.gpus],
                  dict(n.labels), n.free_cpus, n.free_memory, n.schedulable)
        for n in nodes
    ]


class _Simulation:
    def __init__(
        self, jobs: Sequence[TraceJob], nodes: list[NodeState], quotas: dict[str, Resources],
        policy: Policy, penalty: Callable[[TraceJob], float], estimates: bool,
    ) -> None:
        self.jobs = sorted(jobs, key=lambda j: (j.submit_time, j.id))
        self.policy = policy
        self.penalty = penalty
        self.estimates = estimates
        self.nodes = {n.name: n for n in nodes}
        self.history = AttainedHistory()
        self.cohorts = CohortTracker()
        self.cohort_of: dict[str, str] = {}
        self.state = ClusterState(nodes, [], quotas, self.history)
        self.pending: dict[str, JobRequest] = {}
        self.work: dict[str, float] = {}
        self.traces = {j.id: j for j in self.jobs}
        self.running: dict[str, _Run] = {}
        self.heap: list[tuple[float, int, str]] = []
        self.tokens = 0
        self.records = {j.id: JobRecord(j.id, j.submit_time, j.duration, j.total_gpus) for j in self.jobs}
        self.calls = 0
        self.gpu_free_jobs_pending = 0  # pending jobs that need no GPU (then "no free GPU" is no shortcut)
        self.non_preemptive = not getattr(policy, "preemptive", True)
        self._fit_cache: dict[tuple[Resources, int, str | None, int | None], str | None] = {}

    # ---- resources on the node objects the policy reads ----------------------------------------
    def _apply(self, r: Resources, placements: list[ReplicaPlacement], sign: int) -> None:
        for p in placements:
            node = self.nodes[p.node]
            node.free_cpus = (node.free_cpus or 0.0) - sign * r.cpus
            node.free_memory = (node.free_memory or 0) - sign * r.memory
            amount = p.gpu_share if r.gpu_share else 1.0
            for i in p.gpu_indices:
                node.gpus[i].free_share -= sign * amount
                if node.gpus[i].free_share < -EPSILON:
                    raise AssertionError(f"policy over-committed GPU {i} of {p.node}")
            if node.free_cpus < -EPSILON or node.free_memory < 0:
                raise AssertionError(f"policy over-committed {p.node}")

    def _any_gpu_free(self) -> bool:
        return any(g.free_share > EPSILON for n in self.state.nodes if n.schedulable for g in n.gpus)

    # ---- transitions ---------------------------------------------------------------------------
    def _arrive(self, job: TraceJob) -> None:
        key = (job.resources, job.replicas, job.gpu_type, job.gpu_memory)
        if key not in self._fit_cache:
            self._fit_cache[key] = can_ever_fit(job.resources, job.replicas, job.gpu_type, self.state.nodes,
                                                gpu_memory=job.gpu_memory)
        why = self._fit_cache[key]
        if why is not None:
            self.records[job.id].rejected = why
            return
        self.work[job.id] = job.duration
        cohort = self.cohort_of[job.id] = job.cohort or self.cohorts.assign(
            cohort_key(job.project, job.user, job.resources, job.replicas, job.gpu_type), job.id,
            job.submit_time)
        self.pending[job.id] = JobRequest(
            id=job.id, resources=job.resources, replicas=job.replicas, priority=job.priority,
            project=job.project, user=job.user, submit_time=job.submit_time, preemptible=job.preemptible,
            gpu_type=job.gpu_type, runtime_estimate=job.duration if self.estimates else None, cohort=cohort,
            gpu_memory=job.gpu_memory,
        )
        if job.resources.gpus <= 0:
            self.gpu_free_jobs_pending += 1

    def _start(self, d: Place, now: float) -> None:
        req = self.pending.pop(d.job_id)
        trace = self.traces[d.job_id]
        if req.resources.gpus <= 0:
            self.gpu_free_jobs_pending -= 1
        self._apply(req.resources, d.placements, 1)
        rec = self.records[d.job_id]
        if rec.start_time is None:
            rec.start_time = now
            rec.placements = d.placements
        else:
            self.work[d.job_id] += self.penalty(trace)  # resumed from a checkpoint
        rec.starts.append(now)
        work = self.work[d.job_id]
        self.tokens += 1
        rj = RunningJob(
            id=req.id, resources=req.resources, replicas=req.replicas, placements=d.placements,
            priority=req.priority, project=req.project, user=req.user, preemptible=req.preemptible,
            start_time=now, attained_gpu_s=req.attained_gpu_s, gpu_type=req.gpu_type,
            runtime_estimate=work if self.estimates else None, executed=req.executed,
            submit_time=req.submit_time, cohort=req.cohort,
        )
        self.running[req.id] = _Run(trace, rj, now, req.executed, req.attained_gpu_s, work, self.tokens)
        heapq.heappush(self.heap, (now + max(0.0, work - req.executed), self.tokens, req.id))

    def _stop(self, job_id: str, now: float, finished: bool) -> None:
        run = self.running.pop(job_id)
        rj = run.rj
        self._apply(rj.resources, rj.placements, -1)
        elapsed = now - run.seg_start
        executed = run.executed_before + elapsed
        rec = self.records[job_id]
        rec.executed = executed
        rate = gpu_time_rate(rj.resources, rj.replicas)
        attained = run.attained_before + elapsed * rate
        if finished:
            rec.end_time = now
            self.history.record(rate, attained, self.cohort_of[job_id])  # what it learns from: no durations
            return
        rec.preemptions += 1
        t = run.trace
        self.pending[job_id] = JobRequest(
            id=t.id, resources=t.resources, replicas=t.replicas, priority=t.priority, project=t.project,
            user=t.user, submit_time=t.submit_time, preemptible=t.preemptible, gpu_type=t.gpu_type,
            runtime_estimate=run.work if self.estimates else None, attained_gpu_s=attained,
            executed=executed, last_stop_time=now, cohort=self.cohort_of[job_id], gpu_memory=t.gpu_memory,
        )
        if t.resources.gpus <= 0:
            self.gpu_free_jobs_pending += 1

    # ---- the loop ------------------------------------------------------------------------------
    def _refresh_running(self, now: float) -> None:
        for run in self.running.values():
            rj = run.rj
            elapsed = now - run.seg_start
            rj.executed = run.executed_before + elapsed
            rj.attained_gpu_s = run.attained_before + elapsed * gpu_time_rate(rj.resources, rj.replicas)
        self.state.running = [run.rj for run in self.running.values()]

    def _schedule(self, now: float) -> None:
        if not self.pending:
            return
        if self.non_preemptive and not self.gpu_free_jobs_pending and not self._any_gpu_free():
            return  # nothing can start: every pending job needs a GPU and none is free
        for _ in range(MAX_CALLS_PER_INSTANT):
            self._refresh_running(now)
            self.calls += 1
            decisions = self.policy.schedule(self.state, list(self.pending.values()), now, explain=False)
            preempted = False
            for d in decisions:
                if isinstance(d, Place):
                    self._start(d, now)
                elif isinstance(d, Preempt):
                    for victim in d.victims:
                        if victim in self.running:
                            self._stop(victim, now, finished=False)
                            preempted = True
            if not preempted or not self.pending:
                return

    def run(self) -> None:
        i, n = 0, len(self.jobs)
        heap = self.heap
        while True:
            while heap:  # drop completions of attempts that were preempted
                run = self.running.get(heap[0][2])
                if run is not None and run.token == heap[0][1]:
                    break
                heapq.heappop(heap)
            t_done = heap[0][0] if heap else math.inf
            t_arrive = self.jobs[i].submit_time if i < n else math.inf
            now = min(t_done, t_arrive)
            if now == math.inf:
                return
            while heap and heap[0][0] <= now:
                _, token, job_id = heapq.heappop(heap)
                run = self.running.get(job_id)
                if run is not None and run.token == token:
                    self._stop(job_id, now, finished=True)
            while i < n and self.jobs[i].submit_time <= now:
                self._arrive(self.jobs[i])
                i += 1
            self._schedule(now)


def simulate(
    jobs: Sequence[TraceJob],
    cluster: list[NodeState] | ClusterSpec,
    policy: Policy,
    *,
    quotas: dict[str, Resources] | None = None,
    restart_penalty: Callable[[TraceJob], float] = philly_restart_penalty,
    estimates: bool | None = None,
) -> SimResult:
    """Replay ``jobs`` on ``cluster`` under ``policy``. Runtime estimates (the true durations) are given to
    the policy only if ``estimates`` is true, or by default when the policy is clairvoyant (SJF, SRTF)."""
    if isinstance(cluster, ClusterSpec):
        nodes = cluster.to_nodes()
        quotas = {**cluster.to_quotas(), **(quotas or {})}
    else:
        nodes = _copy_nodes(cluster)
    give = bool(getattr(policy, "clairvoyant", False)) if estimates is None else estimates
    sim = _Simulation(jobs, nodes, quotas or {}, policy, restart_penalty, give)
    sim.run()
    total_gpus = sum(len(n.gpus) for n in nodes if n.schedulable)
    return SimResult(getattr(policy, "name", type(policy).__name__), sim.records, total_gpus, sim.calls)
