"""The cluster as Prometheus sees it: read from the database at scrape time (no state of its own).

Jobs by status (and by project), jobs finished as a counter (for failure rates), the queue's length,
oldest wait and a histogram of the waits jobs had before they started, by project; each node's health,
capacity and what is allocated on it; each service's desired and ready replicas; each running job's CPU
and memory use (the usage step's last samples); each GPU's utilization, memory, temperature and power
(the usage step's newest round from the node's NVIDIA tools) and the jobs that hold it. A handful of grouped
queries per scrape, whatever the number of jobs (docs/monitoring.md).

The request metrics of services come from the gateway's own exporter (HAProxy's), not from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import case, func, select

from deepdock.api.enums import JobStatus, NodeHealth, NodeStatus
from deepdock.server.db.models import InferenceReplica, InferenceService, Job, Node, Project, Replica, ReplicaUsage
from deepdock.server.db.session import Database
from deepdock.server.services.gpus import latest_gpu_samples
from deepdock.server.services.nodes import gpu_holders

# Seconds a job waited between submit and start.
WAIT_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
GIB = 1024**3


class ClusterCollector(Collector):
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock  # what "recent" means for the GPU readings: the clock the usage step stamps them by

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as session:
            by_project = session.execute(
                select(Project.name, Job.status, func.count()).join(Project, Project.id == Job.project_id)
                .group_by(Project.name, Job.status)).all()
            queued = session.execute(
                select(Project.name, func.count(), func.min(Job.submitted_at)).join(Project, Project.id == Job.project_id)
                .where(Job.status == JobStatus.QUEUED).group_by(Project.name)).all()
            wait = Job.started_at - Job.submitted_at
            waits = session.execute(
                select(Project.name, func.count(), func.sum(wait),
                       *(func.sum(case((wait <= bound, 1), else_=0)) for bound in WAIT_BUCKETS_S))
                .join(Project, Project.id == Job.project_id).where(Job.started_at.is_not(None))
                .group_by(Project.name)).all()
            nodes = list(session.scalars(select(Node).order_by(Node.name)))
            allocated = {row[0]: row[1:] for row in session.execute(
                select(Replica.node_name, func.sum(Job.cpus), func.sum(Job.memory), func.sum(Job.gpus * Replica.gpu_share))
                .join(Job, Job.id == Replica.job_id).where(Replica.active.is_(True)).group_by(Replica.node_name))}
            usage = session.execute(
                select(ReplicaUsage.job_id, Project.name, ReplicaUsage.node_name, func.sum(ReplicaUsage.cpu_percent),
                       func.sum(ReplicaUsage.memory_usage))
                .join(Job, Job.id == ReplicaUsage.job_id).join(Project, Project.id == Job.project_id)
                .group_by(ReplicaUsage.job_id, Project.name, ReplicaUsage.node_name)).all()
            services = session.execute(
                select(InferenceService.name, InferenceService.desired_replicas,
                       func.count(InferenceReplica.job_id).filter(InferenceReplica.ready.is_(True)))
                .outerjoin(InferenceReplica, InferenceReplica.service_id == InferenceService.id)
                .group_by(InferenceService.name, InferenceService.desired_replicas)).all()
            gpu_samples = latest_gpu_samples(session, self.clock())
            holders = gpu_holders(session)
        yield from _jobs(by_project)
        yield from _queue(queued, waits)
        yield from _nodes(nodes, allocated)
        yield from _services(services)
        yield from _usage(usage)
        yield from _gpus(nodes, gpu_samples, holders)


def _jobs(by_project: Sequence[Any]) -> Iterator[Metric]:
    totals: dict[str, int] = {}
    per_project = GaugeMetricFamily("deepdock_project_jobs", "Jobs by project and status", labels=["project", "status"])
    finished = CounterMetricFamily("deepdock_jobs_finished", "Jobs that ended, by project and status",
                                   labels=["project", "status"])
    for project, status, count in by_project:
        totals[status] = totals.get(status, 0) + count
        per_project.add_metric([project, status], count)
        if status in FINISHED:
            finished.add_metric([project, status], count)
    by_status = GaugeMetricFamily("deepdock_jobs", "Jobs by status", labels=["status"])
    for status in JobStatus:
        by_status.add_metric([status], totals.get(status, 0))
    yield by_status
    yield per_project
    yield finished


def _queue(queued: Sequence[Any], waits: Sequence[Any]) -> Iterator[Metric]:
    now = time.time()
    length = GaugeMetricFamily("deepdock_queue_length", "Queued jobs by project", labels=["project"])
    oldest = GaugeMetricFamily("deepdock_queue_oldest_wait_seconds", "How long the longest-waiting queued job of "
                               "the project has waited", labels=["project"])
    for project, count, first in queued:
        length.add_metric([project], count)
        oldest.add_metric([project], max(0.0, now - first))
    histogram = HistogramMetricFamily("deepdock_queue_wait_seconds", "Seconds between submit and start of the jobs "
                                      "that started, by project", labels=["project"])
    for project, count, total, *cumulative in waits:
        buckets = [(floatToGoString(bound), int(n or 0)) for bound, n in zip(WAIT_BUCKETS_S, cumulative, strict=True)]
        histogram.add_metric([project], [*buckets, ("+Inf", int(count))], float(total or 0.0))
    yield length
    yield oldest
    yield histogram


def _nodes(nodes: list[Node], allocated: dict[str, Any]) -> Iterator[Metric]:
    by_status: dict[str, int] = {}
    up = GaugeMetricFamily("deepdock_node_up", "1 while the node's engine answers its health checks",
                           labels=["node"])
    families = {name: GaugeMetricFamily(f"deepdock_node_{name}", help_, labels=["node"]) for name, help_ in (
        ("capacity_cpus", "CPUs the node offers"), ("capacity_memory_bytes", "Memory the node offers"),
        ("capacity_gpus", "GPUs the node has"), ("allocated_cpus", "CPUs held by jobs on the node"),
        ("allocated_memory_bytes", "Memory held by jobs on the node"),
        ("allocated_gpus", "GPUs held by jobs on the node (a share counts as its fraction)"))}
    for node in nodes:
        shown = NodeStatus.DRAINING if node.draining and node.status == NodeHealth.READY else NodeStatus(node.status)
        by_status[shown] = by_status.get(shown, 0) + 1
        up.add_metric([node.name], 1.0 if node.status == NodeHealth.READY else 0.0)
        cpus, memory, gpus = allocated.get(node.name, (0, 0, 0))
        for name, value in (("capacity_cpus", node.cpus), ("capacity_memory_bytes", node.memory),
                            ("capacity_gpus", len(node.gpus or [])), ("allocated_cpus", cpus or 0),
                            ("allocated_memory_bytes", memory or 0), ("allocated_gpus", gpus or 0)):
            families[name].add_metric([node.name], float(value))
    counts = GaugeMetricFamily("deepdock_nodes", "Nodes by status", labels=["status"])
    for status in NodeStatus:
        counts.add_metric([status], by_status.get(status, 0))
    yield counts
    yield up
    yield from families.values()


def _services(services: Sequence[Any]) -> Iterator[Metric]:
    replicas = GaugeMetricFamily("deepdock_service_replicas", "A service's replicas: desired, and ready (in traffic)",
                                 labels=["service", "state"])
    for name, desired, ready in services:
        replicas.add_metric([name, "desired"], desired)
        replicas.add_metric([name, "ready"], ready)
    yield replicas


def _usage(usage: Sequence[Any]) -> Iterator[Metric]:
    cpu = GaugeMetricFamily("deepdock_job_cpu_percent", "CPU a running job's containers use on a node (100 = one CPU), "
                            "from the last usage sample", labels=["job", "project", "node"])
    memory = GaugeMetricFamily("deepdock_job_memory_bytes", "Memory a running job's containers use on a node",
                               labels=["job", "project", "node"])
    for job, project, node, cpu_percent, memory_bytes in usage:
        cpu.add_metric([job, project, node], float(cpu_percent))
        memory.add_metric([job, project, node], float(memory_bytes))
    yield cpu
    yield memory


def _gpus(nodes: list[Node], samples: dict[str, dict[int, Any]],
          holders: dict[str, dict[int, list[dict[str, object]]]]) -> Iterator[Metric]:
    labels = ["node", "gpu", "uuid", "model"]
    readings = {name: GaugeMetricFamily(f"deepdock_gpu_{name}", help_, labels=labels) for name, help_ in (
        ("utilization_ratio", "Share of the last sample period the GPU was busy (nvidia-smi utilization.gpu / 100)"),
        ("memory_used_bytes", "GPU memory in use"), ("memory_total_bytes", "GPU memory on the device"),
        ("temperature_celsius", "GPU temperature"), ("power_watts", "GPU power draw"))}
    holder = GaugeMetricFamily("deepdock_gpu_holder_share", "Share of the GPU a job holds (1 = the whole device); "
                               "join with deepdock_gpu_utilization_ratio on node and gpu", labels=["node", "gpu", "job",
                                                                                                  "project"])
    for node in nodes:
        models = {int(g["index"]): str(g.get("model", "")) for g in node.gpus or []}
        for index, sample in sorted(samples.get(node.name, {}).items()):
            values = (("utilization_ratio", None if sample.utilization_percent is None
                       else sample.utilization_percent / 100.0),
                      ("memory_used_bytes", sample.memory_used), ("memory_total_bytes", sample.memory_total),
                      ("temperature_celsius", sample.temperature_c), ("power_watts", sample.power_w))
            for name, value in values:
                if value is not None:  # a reading the device lacks is absent, not 0
                    readings[name].add_metric([node.name, str(index), sample.uuid, models.get(index, "")],
                                              float(value))
        for index, jobs in sorted(holders.get(node.name, {}).items()):
            for job in jobs:
                holder.add_metric([node.name, str(index), str(job["job"]), str(job["project"])],
                                  float(job["share"]))  # type: ignore[arg-type]
    yield from readings.values()
    yield holder
