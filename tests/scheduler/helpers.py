"""Small builders for scheduler tests."""

from __future__ import annotations

from deepdock.scheduler.types import (
    GPU,
    ClusterState,
    JobRequest,
    NodeState,
    Place,
    Preempt,
    ReplicaPlacement,
    Resources,
    RunningJob,
    Wait,
)

GIB = 1024**3


def node(name: str, gpus: int = 8, cpus: float = 64, memory: int = 512 * GIB, gpu_type: str = "a100") -> NodeState:
    return NodeState(name, cpus, memory, [GPU(i, gpu_type, 80 * GIB) for i in range(gpus)])


def job(jid: str, gpus: float = 1, replicas: int = 1, submit: float = 0.0, cpus: float = 1,
        memory: int = GIB, **kw) -> JobRequest:
    return JobRequest(jid, Resources(cpus, memory, gpus), replicas=replicas, submit_time=submit, **kw)


def running(jid: str, node_name: str, gpu_indices: list[int], *, cpus: float = 1, memory: int = GIB,
            **kw) -> RunningJob:
    return RunningJob(jid, Resources(cpus, memory, float(len(gpu_indices))), 1,
                      [ReplicaPlacement(node_name, gpu_indices)], **kw)


def occupy(state: ClusterState) -> ClusterState:
    """Set the nodes' free capacity from the running jobs (as the server does)."""
    by_name = {n.name: n for n in state.nodes}
    for rj in state.running:
        for p in rj.placements:
            n = by_name[p.node]
            n.free_cpus = (n.free_cpus or 0) - rj.resources.cpus
            n.free_memory = (n.free_memory or 0) - rj.resources.memory
            for i in p.gpu_indices:
                n.gpus[i].free_share -= p.gpu_share if rj.resources.gpu_share else 1.0
    return state


def by_job(decisions: list) -> dict[str, Place | Preempt | Wait]:
    out = {d.job_id: d for d in decisions}
    assert len(out) == len(decisions), "one decision per job"
    return out


def placed_ids(decisions: list) -> list[str]:
    return [d.job_id for d in decisions if isinstance(d, Place)]
