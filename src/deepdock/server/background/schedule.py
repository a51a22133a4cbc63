"""The schedule step: read the desired state, ask the pure policy, write its decisions. No engine calls.

Placements become an Attempt with one Replica per rank (SCHEDULED); the start step makes containers of
them. Preemptions become a stop request on each victim (the stop step signals them). Waits become the
job's pending reason ("why pending"). Every write is fenced by the row versions (services/lifecycle.py).
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from deepdock.api.enums import AttemptNetwork, AttemptStatus, JobStatus, ReplicaStatus, StopRequest
from deepdock.scheduler.history import AttainedHistory
from deepdock.scheduler.types import (
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
    Wait,
    gpu_time_rate,
)
from deepdock.server.db.models import Attempt, Job, Node, Project, Replica
from deepdock.server.services import lifecycle
from deepdock.server.services.distributed import NO_PORT_REASON, allocate_master_port, attempt_network, one_node_only
from deepdock.server.services.jobs import job_spec
from deepdock.server.services.nodes import allocations, schedulable

# Pending reasons the schedule step gives itself (the scheduler's own are in scheduler/types.py).
HOST_NETWORK_REVOKED = "host_network_revoked"
RENDEZVOUS_PORTS_HELD = "rendezvous_ports_held"

def container_name(job_id: str, attempt: int, rank: int) -> str:
    # Deterministic, so a restarted server finds (and never duplicates) what it started before.
    return f"dd-{job_id}-a{attempt}-r{rank}"


def _resources(job: Job) -> Resources:
    return Resources(cpus=job.cpus, memory=job.memory, gpus=job.gpus)


# How many of the most recent finished jobs seed the history when the loops start (a new lease holder).
HISTORY_WINDOW = 20_000


class FinishedJobs:
    """The scheduler's AttainedHistory, fed from jobs as they finish: what the default policy's Gittins
    index learns from (the simulator feeds the same object at each completion)."""

    def __init__(self) -> None:
        self.history = AttainedHistory()
        self._mark: tuple[float, str] | None = None  # (finished_at, id) of the last job recorded

    def update(self, session: Session) -> None:
        query = select(Job.finished_at, Job.id, Job.cpus, Job.memory, Job.gpus, Job.replicas, Job.attained_gpu_s,
                       Job.cohort).where(
            Job.status.in_(lifecycle.TERMINAL), Job.finished_at.is_not(None)
        )
        if self._mark is None:
            newest = query.order_by(Job.finished_at.desc(), Job.id.desc()).limit(HISTORY_WINDOW)
            rows = list(reversed(session.execute(newest).all()))
        else:
            at, job_id = self._mark
            later = or_(Job.finished_at > at, and_(Job.finished_at == at, Job.id > job_id))
            rows = list(session.execute(query.where(later).order_by(Job.finished_at, Job.id)))
        for finished_at, job_id, cpus, memory, gpus, replicas, attained, cohort in rows:
            rate = gpu_time_rate(Resources(cpus=cpus, memory=memory, gpus=gpus), replicas)
            self.history.record(rate, attained or 0.0, cohort)
            self._mark = (finished_at or 0.0, job_id)
        if self._mark is None:
            self._mark = (0.0, "")


def build_state(session: Session, now: float) -> tuple[ClusterState, list[JobRequest], dict[str, Job]]:
    used = allocations(session)
    nodes: list[NodeState] = []
    for node in session.scalars(select(Node).order_by(Node.name)):
        u = used.get(node.name, {"cpus": 0.0, "memory": 0, "gpu_used": {}})
        gpu_used: dict[int, float] = u["gpu_used"]  # type: ignore[assignment]
        nodes.append(
            NodeState(
                name=node.name,
                cpus=node.cpus,
                memory=node.memory,
                gpus=[
                    GPU(index=g["index"], type=g.get("model", ""), memory=g.get("memory", 0),
                        free_share=max(0.0, 1.0 - gpu_used.get(g["index"], 0.0)))
                    for g in node.gpus or []
                ],
                labels=dict(node.labels or {}),
                free_cpus=node.cpus - float(u["cpus"]),  # type: ignore[arg-type]
                free_memory=node.memory - int(u["memory"]),  # type: ignore[call-overload]
                schedulable=schedulable(node),
            )
        )
    active_jobs = list(session.scalars(select(Job).where(Job.status.in_(lifecycle.ACTIVE))))
    replicas_by_job: dict[str, list[Replica]] = {}
    for replica in session.scalars(select(Replica).where(Replica.active.is_(True))):
        replicas_by_job.setdefault(replica.job_id, []).append(replica)
    running = [
        RunningJob(
            id=j.id,
            resources=_resources(j),
            replicas=j.replicas,
            placements=[
                ReplicaPlacement(node=r.node_name, gpu_indices=list(r.gpu_indices or []), gpu_share=r.gpu_share)
                for r in sorted(replicas_by_job.get(j.id, []), key=lambda r: r.rank)
            ],
            priority=j.priority,
            project=j.project.name,
            user=j.user.name,
            preemptible=j.preemptible,
            start_time=j.started_at or now,
            attained_gpu_s=j.attained_gpu_s,
            gpu_type=j.gpu_type,
            submit_time=j.submitted_at,
            stopping=j.stop_requested is not None,
            cohort=j.cohort,
            spread_group=j.spread_group,
        )
        for j in active_jobs
    ]
    quotas = {
        p.name: Resources(cpus=p.quota_cpus or 0.0, memory=p.quota_memory or 0, gpus=p.quota_gpus or 0.0)
        for p in session.scalars(select(Project))
        if p.quota_cpus is not None or p.quota_memory is not None or p.quota_gpus is not None
    }
    queued = list(
        session.scalars(
            # A job backing off after a failure (services/attempts.py) is not a candidate until its time.
            select(Job).where(Job.status == JobStatus.QUEUED, or_(Job.retry_at.is_(None), Job.retry_at <= now))
            .order_by(Job.priority.desc(), Job.submitted_at)
        )
    )
    # A host-network job whose project lost the grant after submit waits (the grant is checked per attempt).
    revoked = {j.id for j in queued if job_spec(j).network == "host" and not j.project.host_network}
    for j in queued:
        if j.id in revoked:
            _set_pending(j, {"code": HOST_NETWORK_REVOKED, "position": 0, "details": {"project": j.project.name},
                             "message": f"project {j.project.name} may no longer use host networking "
                                        "(network: host); an admin grants it with `deepdock project "
                                        f"allow-host-network {j.project.name}`, or resubmit with network: auto"})
    queued = [j for j in queued if j.id not in revoked]
    queue = [
        JobRequest(
            id=j.id,
            resources=_resources(j),
            replicas=j.replicas,
            priority=j.priority,
            project=j.project.name,
            user=j.user.name,
            submit_time=j.submitted_at,
            preemptible=j.preemptible,
            gpu_type=j.gpu_type,
            runtime_estimate=job_spec(j).runtime_estimate,
            gpu_memory=job_spec(j).resources.gpu_memory,
            attained_gpu_s=j.attained_gpu_s,
            cohort=j.cohort,
            one_node=one_node_only(job_spec(j), j.project.host_network),
            spread_group=j.spread_group,
        )
        for j in queued
    ]
    return ClusterState(nodes=nodes, running=running, quotas=quotas), queue, {j.id: j for j in queued + active_jobs}


def run_cycle(session: Session, policy: Policy, now: float,
              finished: FinishedJobs | None = None) -> list[tuple[int, str]]:
    """Apply one round of decisions; returns (attempt id, node of rank 0) of each attempt placed."""
    state, queue, jobs = build_state(session, now)
    if not queue:
        return []
    if finished is not None:
        finished.update(session)
        state.history = finished.history
    placed: list[tuple[int, str]] = []
    decisions = policy.schedule(state, queue, now)
    with lifecycle.fenced("the scheduling cycle's jobs"):
        for decision in decisions:
            placed.extend(_apply(session, jobs, decision, now))
        session.flush()
    return placed


def _apply(session: Session, jobs: dict[str, Job], decision: Place | Preempt | Wait,
           now: float) -> list[tuple[int, str]]:
    """One decision; returns the attempt placed, if any."""
    job = jobs[decision.job_id]
    if isinstance(decision, Place):
        attempt_id = _place(session, job, decision.placements, now)
        return [] if attempt_id is None else [(attempt_id, decision.placements[0].node)]
    if isinstance(decision, Preempt):
        for victim_id in decision.victims:
            victim = jobs.get(victim_id)
            if victim is not None and victim.stop_requested is None:
                victim.stop_requested = StopRequest.PREEMPTED
                victim.status_reason = f"preempted for {job.id}: {decision.reason}"
        _set_pending(job, {"code": "preempting", "message": decision.reason, "position": 0,
                           "details": {"victims": decision.victims}})
    elif isinstance(decision, Wait):
        _set_pending(job, asdict(decision.reason))
    return []


def _set_pending(job: Job, reason: dict[str, object]) -> None:
    if job.pending_reason != reason:  # an unchanged reason is not rewritten: 10k waiting jobs stay cheap
        job.pending_reason = reason


def _place(session: Session, job: Job, placements: list[ReplicaPlacement], now: float) -> int | None:
    network = attempt_network(job_spec(job), [p.node for p in placements])
    port = allocate_master_port(session, now) if network == AttemptNetwork.HOST else None
    if network == AttemptNetwork.HOST and port is None:
        _set_pending(job, {"code": RENDEZVOUS_PORTS_HELD, "message": NO_PORT_REASON, "position": 0, "details": {}})
        return None
    number = job.attempt_count + 1
    job.attempt_count = number
    job.retry_at = None
    attempt = Attempt(job_id=job.id, number=number, status=AttemptStatus.SCHEDULED, network=network,
                      master_port=port)
    session.add(attempt)
    session.flush()
    for rank, placement in enumerate(placements):
        session.add(
            Replica(
                attempt_id=attempt.id,
                job_id=job.id,
                rank=rank,
                node_name=placement.node,
                gpu_indices=list(placement.gpu_indices),
                gpu_share=placement.gpu_share,
                container_name=container_name(job.id, number, rank),
                status=ReplicaStatus.SCHEDULED,
            )
        )
    nodes = ", ".join(sorted({p.node for p in placements}))
    lifecycle.transition(session, job, JobStatus.SCHEDULED, f"placed on {nodes}", attempt=number)
    return attempt.id
