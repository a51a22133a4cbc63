"""How far can knowing a job's batch take a scheduler? SRTF with a predictor that peeks at the future.

    .venv/bin/python benchmarks/bench_philly_predictor.py [--capacity 0.25] [--workers 2]

The default policy's goal on the Philly replay is a mean JCT within 1.3× of SRTF with every job's true
duration. The trace has no user column, so what an online scheduler can know about a job is its VC, its
GPU count, when it was submitted and which batch (cohort, ``scheduler/cohort.py``) it came with. This
benchmark gives SRTF the best duration estimate those features allow, *including information no online
scheduler has*: the median of the true durations of the job's other cohort members (or, for a job alone
in its cohort, the median true duration of every job of its GPU count in its VC over the whole trace).
A job that outlives its estimate is expected to run as long again. Remaining GPU-time orders the queue,
as the default's index does (per GPU-second).

It runs in the same process as SRTF (true durations) and the default policy, and prints the three mean
JCTs and their ratios. If the predictor does no better than the default, the 1.3× gap is the price of not
knowing durations, not of how the default uses what it can learn (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from collections.abc import Sequence

from deepdock.scheduler.cohort import CohortTracker, cohort_key
from deepdock.scheduler.policies import POLICIES
from deepdock.scheduler.queue_policy import CycleContext, QueuePolicy, Rank
from deepdock.scheduler.types import JobRequest, RunningJob, gpu_time_rate
from deepdock.settings import get_settings
from deepdock.sim.metrics import summarize
from deepdock.sim.runner import Partition, load_workload, run_policies
from deepdock.sim.trace import TraceJob


def cohort_predictions(jobs: Sequence[TraceJob]) -> dict[str, float]:
    """Job id → median true duration of its cohort's other members (alone: of its GPU count's jobs)."""
    tracker = CohortTracker()
    cohorts: dict[str, list[TraceJob]] = defaultdict(list)
    for j in sorted(jobs, key=lambda j: (j.submit_time, j.id)):
        key = cohort_key(j.project, j.user, j.resources, j.replicas, j.gpu_type)
        cohorts[tracker.assign(key, j.id, j.submit_time)].append(j)
    by_gpus: dict[float, list[float]] = defaultdict(list)
    for j in jobs:
        by_gpus[j.total_gpus].append(j.duration)
    median_of = {g: statistics.median(d) for g, d in by_gpus.items()}
    out: dict[str, float] = {}
    for members in cohorts.values():
        for j in members:
            others = [m.duration for m in members if m is not j]
            out[j.id] = statistics.median(others) if others else median_of[j.total_gpus]
    return out


PREDICTED: dict[str, float] = {}


class PredictedSrtf(QueuePolicy):
    """Shortest predicted remaining GPU-time first, preemptive (a diagnostic, not a shipped policy)."""

    name = "srtf-cohort-predictor"
    preemptive = True

    @staticmethod
    def _remaining(job: JobRequest | RunningJob) -> float:
        predicted, executed = PREDICTED[job.id], job.executed
        left = predicted - executed if predicted > executed + 60.0 else executed
        return left * gpu_time_rate(job.resources, job.replicas)

    def rank(self, job: JobRequest, ctx: CycleContext) -> Rank:
        return (self._remaining(job),)

    def may_preempt(self, job: JobRequest, victim: RunningJob, ctx: CycleContext) -> bool:
        return self._remaining(job) < self._remaining(victim)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capacity", type=float, default=0.25)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    workload: list[Partition] = load_workload("philly", None, args.capacity, get_settings().philly_dir)
    for part in workload:
        PREDICTED.update(cohort_predictions(part.jobs))
    POLICIES[PredictedSrtf.name] = PredictedSrtf  # forked workers inherit the registration
    results = run_policies(["default", "srtf", PredictedSrtf.name], workload, args.workers)
    means = {name: summarize(res)["jct_mean"] for name, (res, _) in results.items()}
    srtf = means["srtf"]
    for name, mean in means.items():
        print(f"{name:24s} mean JCT {mean:10,.0f} s   {mean / srtf:5.3f}x srtf")


if __name__ == "__main__":
    main()
