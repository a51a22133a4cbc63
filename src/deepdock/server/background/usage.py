"""The usage step: one CPU and memory sample of every running container, all nodes at once, kept in
``replica_usage`` for ``/metrics`` (per job) and the dashboard's job and node pages.

An engine's stats call waits for two samples (about a second on Docker), so calls run in a lane of
their own per node (never behind that node's starts and stops) and the step waits at most
``USAGE_DEADLINE_S`` for them: a sample that comes later is written by the next round. Rows of replicas
no longer running are deleted, so a finished job stops being reported. Every sample is also appended to
``usage_samples`` (the charts' history), kept ``USAGE_KEPT_S``.

On nodes with GPUs the same round also asks the node's NVIDIA tools what each device is doing
(``GpuTelemetry``, a one-shot nvidia-smi probe container in the same lane) and appends one
``gpu_samples`` row per device: the newest round is what /metrics and the nodes list show.
"""

from __future__ import annotations

from concurrent.futures import Future

from sqlalchemy import delete, select

from deepdock.api.enums import NodeHealth, ReplicaStatus
from deepdock.compute.abilities import GpuTelemetry, StatsSource, ability
from deepdock.compute.base import ContainerStats, GpuStats
from deepdock.errors import DeepdockError
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import GpuSample, Node, Replica, ReplicaUsage, UsageSample

USAGE_DEADLINE_S = 5.0
# How long the history of samples is kept: a day, as the services' traffic samples.
USAGE_KEPT_S = 86400.0


def usage_lane(node: str) -> str:
    return f"{node}:usage"


def run(ctx: AppContext, work: Work) -> int:
    """One round; returns how many samples it wrote."""
    with ctx.db.session() as session:
        rows = session.execute(
            select(Replica.id, Replica.job_id, Replica.rank, Replica.container_id, Node)
            .join(Node, Node.name == Replica.node_name)
            .where(Replica.status == ReplicaStatus.RUNNING, Replica.container_id.is_not(None))).all()
        gpu_nodes = [n for n in session.scalars(select(Node).where(Node.status == NodeHealth.READY)) if n.gpus]
        session.expunge_all()
    futures: dict[int, tuple[str, int, str, Future[ContainerStats | None]]] = {}
    for replica_id, job_id, rank, container_id, node in rows:
        future = work.engine.submit(f"usage:{replica_id}", _sample, ctx, node, container_id, lane=usage_lane(node.name))
        if future is not None:
            futures[replica_id] = (job_id, rank, node.name, future)
    gpu_futures: dict[str, Future[list[GpuStats] | None]] = {}
    for node in gpu_nodes:
        gpu_future = work.engine.submit(f"gpus:{node.name}", _sample_gpus, ctx, node, lane=usage_lane(node.name))
        if gpu_future is not None:
            gpu_futures[node.name] = gpu_future
    work.engine.wait([f for *_, f in futures.values()] + list(gpu_futures.values()), USAGE_DEADLINE_S)
    now = ctx.clock()
    written = 0
    with ctx.db.session() as session:
        running = {replica_id for replica_id, *_ in rows}
        session.execute(delete(ReplicaUsage).where(ReplicaUsage.replica_id.not_in(running)) if running
                        else delete(ReplicaUsage))
        session.execute(delete(UsageSample).where(UsageSample.at < now - USAGE_KEPT_S))
        session.execute(delete(GpuSample).where(GpuSample.at < now - USAGE_KEPT_S))
        for node_name, gpu_future in gpu_futures.items():
            for gpu in (gpu_future.result() if gpu_future.done() else None) or []:
                session.add(GpuSample(node_name=node_name, gpu_index=gpu.index, uuid=gpu.uuid, at=now,
                                      utilization_percent=gpu.utilization_percent, memory_used=gpu.memory_used,
                                      memory_total=gpu.memory_total, temperature_c=gpu.temperature_c,
                                      power_w=gpu.power_w))
                written += 1
        for replica_id, (job_id, rank, node_name, future) in futures.items():
            stats = future.result() if future.done() else None
            if stats is None:
                continue
            session.merge(ReplicaUsage(replica_id=replica_id, job_id=job_id, node_name=node_name,
                                       cpu_percent=stats.cpu_percent, memory_usage=stats.memory_usage,
                                       memory_limit=stats.memory_limit, at=now))
            session.add(UsageSample(job_id=job_id, rank=rank, node_name=node_name, at=now, cpu_percent=stats.cpu_percent,
                                    memory_usage=stats.memory_usage, memory_limit=stats.memory_limit))
            written += 1
        session.commit()
    return written


def _sample(ctx: AppContext, node: Node, container_id: str) -> ContainerStats | None:
    try:
        return ability(ctx.backend(node), StatsSource, node.name).stats(container_id)
    except DeepdockError as exc:  # gone between the listing and the call, or the engine is down: next round
        log.debug("no usage sample of %s on %s: %s", container_id, node.name, exc.message)
        return None


def _sample_gpus(ctx: AppContext, node: Node) -> list[GpuStats] | None:
    try:
        return ability(ctx.backend(node), GpuTelemetry, node.name).gpu_stats()
    except DeepdockError as exc:  # the tools did not answer (a driver restarting, the engine down): next round
        log.warning("no GPU sample of node %s: %s", node.name, exc.message)
        return None
