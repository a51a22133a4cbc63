"""The baselines: strict FIFO, FIFO with first-fit backfill, SJF/SRTF with oracle durations, Tiresias,
and the plain priority policy the server starts with."""

from __future__ import annotations

import math

from deepdock.scheduler.queue_policy import CycleContext, QueuePolicy, Rank
from deepdock.scheduler.types import JobRequest, RunningJob

# Tiresias' discretized 2D-LAS: queue boundaries in attained GPU-seconds (the paper finds two or three
# queues enough; these are the Helios artifact's order of magnitude: one GPU-hour, ten GPU-hours).
TIRESIAS_THRESHOLDS_GPU_S = (3_600.0, 36_000.0)
# A job waiting longer than this many times its executed time is promoted to the top queue.
TIRESIAS_STARVE_FACTOR = 10.0


class Fifo(QueuePolicy):
    """Submission order; nothing starts after the first job that cannot (head-of-line blocking)."""

    name = "fifo"
    strict = True


class FifoBackfill(QueuePolicy):
    """Submission order; any later job that fits starts (first-fit backfill, no reservations)."""

    name = "fifo-backfill"


class Priority(QueuePolicy):
    """Priority, then submission time. Higher priority preempts lower; the best blocked job reserves."""

    name = "priority"
    preemptive = True
    reservations = True

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        return (-job.priority, job.submit_time)

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        return victim.priority < job.priority

    def preempt_reason(self, job: JobRequest, victims: list[RunningJob]) -> str:
        return (f"job {job.id} (priority {job.priority}) preempts lower-priority "
                + ", ".join(f"{v.id} (priority {v.priority})" for v in victims))


def _remaining(estimate: float | None, executed: float) -> float:
    return math.inf if estimate is None else max(0.0, estimate - executed)


class Sjf(QueuePolicy):
    """Shortest (oracle) job first, non-preemptive, first fit."""

    name = "sjf"
    clairvoyant = True

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        return (_remaining(job.runtime_estimate, 0.0),)


class Srtf(QueuePolicy):
    """Shortest (oracle) remaining time first; a job preempts running jobs with more time left."""

    name = "srtf"
    clairvoyant = True
    preemptive = True

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        return (_remaining(job.runtime_estimate, job.executed),)

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        mine = _remaining(job.runtime_estimate, job.executed)
        return mine < _remaining(victim.runtime_estimate, victim.executed)

    def preempt_reason(self, job: JobRequest, victims: list[RunningJob]) -> str:
        return f"job {job.id} has less remaining time than {', '.join(v.id for v in victims)}"


def tiresias_queue(attained_gpu_s: float) -> int:
    for i, limit in enumerate(TIRESIAS_THRESHOLDS_GPU_S):
        if attained_gpu_s < limit:
            return i
    return len(TIRESIAS_THRESHOLDS_GPU_S)


def starving(job: JobRequest, now: float, factor: float) -> bool:
    """Has the job waited (since it last ran, or since submission) ``factor`` times what it has run?"""
    if job.executed <= 0:
        return False
    since = job.last_stop_time if job.last_stop_time is not None else job.submit_time
    return now - since >= factor * job.executed


class Tiresias(QueuePolicy):
    """Discretized two-dimensional least-attained-GPU-time (GPUs × time): lower queues first, FIFO within
    a queue, preemptive across queues, starving jobs promoted to the top queue."""

    name = "tiresias"
    preemptive = True

    def _queue(self, job: JobRequest, now: float) -> int:
        if starving(job, now, TIRESIAS_STARVE_FACTOR):
            return 0
        return tiresias_queue(job.attained_gpu_s)

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        return (self._queue(job, ctx.now), job.submit_time)

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        return tiresias_queue(victim.attained_gpu_s) > self._queue(job, ctx.now)

    def preempt_reason(self, job: JobRequest, victims: list[RunningJob]) -> str:
        return (f"job {job.id} is in a higher-priority attained-GPU-time queue than "
                + ", ".join(v.id for v in victims))
