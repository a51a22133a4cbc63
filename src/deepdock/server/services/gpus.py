"""What the GPUs of the nodes are doing, as the usage step sampled it from each node's NVIDIA tools
(``gpu_samples``): the newest round of each node for the nodes list and /metrics, and the history for the
dashboard's chart. Device readings name no job, so every user may read them, as they read allocations."""

from __future__ import annotations

import math
from itertools import groupby

from sqlalchemy import BigInteger, and_, cast, func, select
from sqlalchemy.orm import Session

from deepdock.api import GpuSeriesOut
from deepdock.errors import SpecError
from deepdock.server.db.models import GpuSample, now_s
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
              max_points: int | None = None, now: float | None = None) -> list[GpuSeriesOut]:
    """Every GPU sample since ``since`` (the last hour before ``now`` by default), one series per node and
    device. With ``max_points`` the window is cut into that many equal spans and each span of a device
    becomes one point, its peak (the busiest reading, the most memory, at its last sample's time): a busy
    moment is what a utilization chart is read for. The spans are grouped in SQL, so a dashboard reading an
    hour of 400 GPUs (144,000 samples) gets ~100 points a device without the rows leaving the database."""
    check_max_points(max_points)
    if since is not None and math.isnan(since):
        raise SpecError("since must be a time in seconds since the epoch")
    end = now if now is not None else now_s()
    # Clamped into [0, now]: the spans are integer milliseconds in SQL (a BIGINT), and no sample is newer.
    start = min(max(since if since is not None else end - GPU_USAGE_WINDOW_S, 0.0), end)
    where = [GpuSample.at > start] + ([GpuSample.node_name == node] if node is not None else [])
    keys = (GpuSample.node_name, GpuSample.gpu_index)
    if max_points is None:
        query = select(*keys, GpuSample.at, GpuSample.utilization_percent, GpuSample.memory_used,
                       GpuSample.memory_total).where(*where).order_by(*keys, GpuSample.at)
    else:
        # Integer milliseconds divided by an integer span: the same integer division in SQLite and PostgreSQL.
        span_ms = max(1, int((end - start) * 1000 / max_points) + 1)
        span = (cast(GpuSample.at * 1000, BigInteger) - int(start * 1000)) // span_ms
        last = func.max(GpuSample.at)
        query = (select(*keys, last, func.max(GpuSample.utilization_percent), func.max(GpuSample.memory_used),
                        func.max(GpuSample.memory_total)).where(*where).group_by(*keys, span).order_by(*keys, last))
    series: list[GpuSeriesOut] = []
    for (node_name, index), samples in groupby(session.execute(query), key=lambda r: (r[0], r[1])):
        rows = list(samples)
        series.append(GpuSeriesOut(node=node_name, index=index, at=[r[2] for r in rows],
                                   utilization_percent=[r[3] for r in rows], memory_used=[r[4] for r in rows],
                                   memory_total=rows[-1][5]))
    return series
