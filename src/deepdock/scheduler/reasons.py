"""'Why is my job pending?' — turn the cycle's notes into machine-readable reasons with positions.

Computed once, after the cycle's placements, so that each message describes the capacity that is left
and a summary of the cluster is built once per cycle rather than once per waiting job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepdock.scheduler.capacity import Allocator
from deepdock.scheduler.fairshare import FairShare
from deepdock.scheduler.types import (
    BEHIND_HIGHER_PRIORITY,
    GANG_RESERVATION,
    GPU_TYPE_UNAVAILABLE,
    INSUFFICIENT_RESOURCES,
    PREEMPTING,
    QUOTA_EXHAUSTED,
    ClusterState,
    JobRequest,
    PendingReason,
    Wait,
)

if TYPE_CHECKING:
    from deepdock.scheduler.engine import WaitNote

_GIB = 1024**3


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Summary:
    def __init__(self, alloc: Allocator, state: ClusterState) -> None:
        self.alloc = alloc
        self.cpus, self.memory, self.share = alloc.largest_free()
        self.type_capacity: dict[str, int] = {}
        for node in state.nodes:
            if not node.schedulable:
                continue
            per: dict[str, int] = {}
            for g in node.gpus:
                per[g.type] = per.get(g.type, 0) + 1
            for t, c in per.items():
                self.type_capacity[t] = max(self.type_capacity.get(t, 0), c)


def _no_fit(job: JobRequest, s: _Summary) -> tuple[str, str]:
    r = job.resources
    kind = f"{job.gpu_type} " if job.gpu_type else ""
    if job.gpu_type is not None and s.type_capacity.get(job.gpu_type, 0) < max(1, r.whole_gpus):
        have = s.type_capacity.get(job.gpu_type, 0)
        return GPU_TYPE_UNAVAILABLE, (
            f"no schedulable node has {max(1, r.whole_gpus)} {job.gpu_type} GPUs "
            f"(the most on one node is {have})"
        )
    if r.whole_gpus:
        most = s.alloc.max_whole_free(job.gpu_type)
        if most < r.whole_gpus:
            return INSUFFICIENT_RESOURCES, (
                f"no node has {r.whole_gpus} free {kind}GPUs; the most free on one node is {most}"
            )
    elif r.gpu_share and s.share + 1e-9 < r.gpu_share:
        return INSUFFICIENT_RESOURCES, (
            f"no {kind}GPU has a free share of {r.gpu_share:g}; the largest free share is {s.share:g}"
        )
    if s.cpus + 1e-9 < r.cpus:
        return INSUFFICIENT_RESOURCES, (
            f"no node has {r.cpus:g} free CPUs; the most free on one node is {s.cpus:g}"
        )
    if s.memory < r.memory:
        return INSUFFICIENT_RESOURCES, (
            f"no node has {r.memory / _GIB:.1f} GiB of free memory; the most free on one node is "
            f"{s.memory / _GIB:.1f} GiB"
        )
    return INSUFFICIENT_RESOURCES, (
        f"its {job.replicas} replicas must start together and the free capacity cannot hold all of them"
    )


def explain_waits(
    notes: list[WaitNote], alloc: Allocator, shares: FairShare, state: ClusterState
) -> list[Wait]:
    summary = _Summary(alloc, state) if notes else None
    out: list[Wait] = []
    for position, note in enumerate(notes, start=1):
        job = note.job
        ahead = position - 1
        details: dict[str, object] = dict(note.detail)
        if note.kind == "blocked":
            code, msg = BEHIND_HIGHER_PRIORITY, f"behind {_plural(ahead, 'job')} of higher priority"
        elif note.kind == "reserved":
            nodes = ", ".join(note.detail["nodes"])  # type: ignore[arg-type]
            code = GANG_RESERVATION
            msg = f"nodes {nodes} are reserved for this job; waiting for them to drain"
        elif note.kind == "behind_reservation":
            holder = note.detail.get("holder")
            code, msg = GANG_RESERVATION, f"the free capacity is reserved for job {holder}, which ranks ahead"

        elif note.kind == "preempting":
            stopping = note.detail.get("stopping", [])
            code, msg = PREEMPTING, f"waiting for {_plural(len(stopping), 'preempted job')} to stop"  # type: ignore[arg-type]
        else:
            assert summary is not None
            quota = shares.quota_text(job)
            if quota is not None:
                code, msg = QUOTA_EXHAUSTED, quota
            else:
                code, msg = _no_fit(job, summary)
        out.append(Wait(job.id, PendingReason(code, msg, position, details)))
    return out
