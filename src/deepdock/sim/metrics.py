"""Summary figures of one simulated run."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepdock.sim.simulator import SimResult

P50, P99 = 50, 99


def summarize(result: SimResult) -> dict[str, Any]:
    """Mean/p50/p99 JCT (end − submit), mean/p99 queueing (time not running, summed over preemptions),
    makespan (last end − first submit), GPU utilization (busy GPU-seconds / capacity over the makespan),
    preemptions; all times in seconds."""
    done = [r for r in result.jobs.values() if r.end_time is not None]
    rejected = sum(1 for r in result.jobs.values() if r.rejected is not None)
    unfinished = len(result.jobs) - len(done) - rejected
    out: dict[str, Any] = {
        "policy": result.policy, "jobs": len(done), "rejected": rejected, "unfinished": unfinished,
        "preemptions": result.preemptions, "policy_calls": result.policy_calls, "gpus": result.total_gpus,
    }
    if not done:
        return out
    submit = np.array([r.submit_time for r in done])
    end = np.array([r.end_time for r in done], dtype=float)
    executed = np.array([r.executed for r in done])
    gpus = np.array([r.gpus for r in done])
    jct = end - submit
    queueing = np.maximum(0.0, jct - executed)
    makespan = float(end.max() - submit.min())
    busy = float((gpus * executed).sum())
    out.update({
        "jct_mean": float(jct.mean()), "jct_p50": float(np.percentile(jct, P50)),
        "jct_p99": float(np.percentile(jct, P99)),
        "queue_mean": float(queueing.mean()), "queue_p99": float(np.percentile(queueing, P99)),
        "makespan": makespan,
        "gpu_utilization": busy / (result.total_gpus * makespan) if result.total_gpus and makespan else 0.0,
    })
    return out
