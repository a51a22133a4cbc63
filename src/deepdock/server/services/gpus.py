"""What the GPUs of the nodes are doing, as the usage step sampled it from each node's NVIDIA tools
(``gpu_samples``): the newest round of each node for the nodes list and /metrics, and the history for the
dashboard's chart. Device readings name no job, so every user may read them, as they read allocations."""

from __future__ import annotations

from itertools import groupby

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from deepdock.api import GpuSeriesOut
from deepdock.server.db.models import GpuSample, now_s
from deepdock.server.services.downsample import lttb_indices
from deepdock.server.services.runs import check_max_points

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


def gpu_usage(session: Session, since: float | None = None, node: str | None = None,
              max_points: int | None = None) -> list[GpuSeriesOut]:
    """Every GPU sample since ``since`` (the last hour by default), one series per node and device; a
    series longer than ``max_points`` keeps the samples LTTB picks on its utilization (as metric series)."""
    check_max_points(max_points)
    start = since if since is not None else now_s() - GPU_USAGE_WINDOW_S
    query = select(GpuSample.node_name, GpuSample.gpu_index, GpuSample.at, GpuSample.utilization_percent,
                   GpuSample.memory_used, GpuSample.memory_total).where(GpuSample.at > start)
    if node is not None:
        query = query.where(GpuSample.node_name == node)
    series: list[GpuSeriesOut] = []
    rows = session.execute(query.order_by(GpuSample.node_name, GpuSample.gpu_index, GpuSample.at)).all()
    for (node_name, index), samples in groupby(rows, key=lambda r: (r[0], r[1])):
        kept = list(samples)
        if max_points is not None and len(kept) > max_points:
            utilization = np.array([r[3] if r[3] is not None else np.nan for r in kept], dtype=np.float64)
            picked = lttb_indices(np.array([r[2] for r in kept]), np.nan_to_num(utilization), max_points)
            kept = [kept[i] for i in picked]
        series.append(GpuSeriesOut(node=node_name, index=index, at=[r[2] for r in kept],
                                   utilization_percent=[r[3] for r in kept], memory_used=[r[4] for r in kept],
                                   memory_total=kept[-1][5]))
    return series
