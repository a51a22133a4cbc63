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
    GPU_MEMORY_UNAVAILABLE,
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
    from deepdock.scheduler.queue_policy import WaitNote

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
        self._nodes = [n for n in state.nodes if n.schedulable]
        self._memory_capacity: dict[tuple[str | None, int], int] = {}

    def memory_capacity(self, gpu_type: str | None, gpu_memory: int) -> int:
        """The most GPUs (of the type, if given) with at least ``gpu_memory`` on one schedulable node."""
        key = (gpu_type, gpu_memory)
        have = self._memory_capacity.get(key)
        if have is None:
            have = self._memory_capacity[key] = max(
                (sum(1 for g in n.gpus if (gpu_type is None or g.type == gpu_type) and g.memory >= gpu_memory)
                 for n in self._nodes), default=0)
        return have


def _gib(nbytes: float) -> str:
    return f"{nbytes / _GIB:.1f} GiB"


def _no_fit(job: JobRequest, s: _Summary) -> tuple[str, str]:
    r = job.resources
    kind = f"{job.gpu_type} " if job.gpu_type else ""
    need = max(1, r.whole_gpus)
    if job.gpu_type is not None and s.type_capacity.get(job.gpu_type, 0) < need:
        have = s.type_capacity.get(job.gpu_type, 0)
        return GPU_TYPE_UNAVAILABLE, (
            f"no schedulable node has {need} {job.gpu_type} GPUs "
            f"(the most on one node is {have})"
        )
    floor = job.gpu_memory if r.gpus > 0 else None
    big = f" with at least {_gib(floor)}" if floor else ""
    if floor and s.memory_capacity(job.gpu_type, floor) < need:
        return GPU_MEMORY_UNAVAILABLE, (
            f"no schedulable node has {need} {kind}GPUs{big} "
            f"(the most on one node is {s.memory_capacity(job.gpu_type, floor)})"
        )
    if r.whole_gpus:
        most = s.alloc.max_whole_free(job.gpu_type, floor)
        if most < r.whole_gpus:
            return INSUFFICIENT_RESOURCES, (
                f"no node has {r.whole_gpus} free {kind}GPUs{big}; the most free on one node is {most}"
            )
    elif r.gpu_share:
        share = s.alloc.largest_free_share(job.gpu_type, floor) if floor else s.share
        if share + 1e-9 < r.gpu_share:
            return INSUFFICIENT_RESOURCES, (
                f"no {kind}GPU{big} has a free share of {r.gpu_share:g}; the largest free share is {share:g}"
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
    if job.replicas == 1:
        wanted = ("GPUs, CPUs and memory" if r.gpus > 0 else "CPUs and memory")
        return INSUFFICIENT_RESOURCES, (
            f"no single node has its {wanted} free at once: each is free somewhere, but not together on one node"
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
