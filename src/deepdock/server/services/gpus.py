"""What the GPUs of the nodes are doing, as the usage step sampled it from each node's NVIDIA tools
(``gpu_samples``): the newest round of each node for the nodes list and /metrics, and the history for the
dashboard's chart. Device readings name no job, so every user may read them, as they read allocations."""

from __future__ import annotations

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from deepdock.api import GpuUsageSampleOut
from deepdock.server.db.models import GpuSample, now_s

# A node's newest sample older than this is not shown as current (its node stopped answering, or lost
# its GPUs): a stale reading on the GPU map or in /metrics would say a device is busy that nobody sees.
GPU_SAMPLE_FRESH_S = 120.0
# The history the dashboard charts by default, as the containers' usage charts.
GPU_USAGE_WINDOW_S = 3600.0


def latest_gpu_samples(session: Session, now: float | None = None) -> dict[str, dict[int, GpuSample]]:
    """Per node and GPU index, the newest round's sample, if it is fresher than ``GPU_SAMPLE_FRESH_S``."""
    newest = (select(GpuSample.node_name, func.max(GpuSample.at).label("at"))
              .where(GpuSample.at >= (now if now is not None else now_s()) - GPU_SAMPLE_FRESH_S)
              .group_by(GpuSample.node_name).subquery())
    rows = session.scalars(select(GpuSample).join(
        newest, and_(GpuSample.node_name == newest.c.node_name, GpuSample.at == newest.c.at)))
    latest: dict[str, dict[int, GpuSample]] = {}
    for sample in rows:
        latest.setdefault(sample.node_name, {})[sample.gpu_index] = sample
    return latest


def gpu_usage(session: Session, since: float | None = None, node: str | None = None) -> list[GpuUsageSampleOut]:
    """Every GPU sample since ``since`` (the last hour by default), by node, device and time."""
    start = since if since is not None else now_s() - GPU_USAGE_WINDOW_S
    query = select(GpuSample).where(GpuSample.at > start)
    if node is not None:
        query = query.where(GpuSample.node_name == node)
    rows = session.scalars(query.order_by(GpuSample.node_name, GpuSample.gpu_index, GpuSample.at))
    return [GpuUsageSampleOut(at=s.at, node=s.node_name, index=s.gpu_index, utilization_percent=s.utilization_percent,
                              memory_used=s.memory_used, memory_total=s.memory_total) for s in rows]
