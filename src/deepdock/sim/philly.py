"""Loader for Microsoft's Philly trace as published with Pollux, replayed as its README prescribes.

The data stays in ``../shared/traces/philly`` (or the folder the caller passes: ``settings.philly_dir``,
env ``DEEPDOCK_PHILLY_DIR``, at the CLI and in the benchmarks); it is read at run time and
never copied into the repository. Replay: jobs submitted 2017-10-01 .. 2017-11-30 in the 11 VCs listed in
``vcs.csv``; each VC is its own cluster of 8-GPU nodes (capacity × scale, rounded down to whole nodes, at
least one); a job of ≤ 8 GPUs fits on one node, a larger one takes whole nodes (ceil(gpus / 8) replicas
of 8 GPUs, so a 12-GPU job holds two whole nodes).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deepdock.errors import SpecError
from deepdock.scheduler.types import GPU, NodeState, Resources
from deepdock.sim.trace import TraceJob

GPUS_PER_NODE = 8
NODE_CPUS = 64.0
NODE_MEMORY_BYTES = 512 * 1024**3
GPU_MEMORY_BYTES = 24 * 1024**3  # Philly's P100/P40 era: its jobs ask for no GPU memory, so it excludes no GPU
GPU_TYPE = "philly"
REPLAY_START = datetime(2017, 10, 1)
REPLAY_END = datetime(2017, 12, 1)  # exclusive: through 2017-11-30 23:59:59
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Checkpoint-restart penalty after a preemption (seconds), as in the Helios artifact.
RESTART_PENALTY_1_GPU_S = 7.0
RESTART_PENALTY_1_NODE_S = 30.0
RESTART_PENALTY_MULTI_NODE_S = 60.0


def default_philly_dir() -> Path:
    """Where the trace is when no folder is given: ``../shared/traces/philly`` beside the repository."""
    # src/deepdock/sim/philly.py -> repository root -> ../shared/traces/philly
    return Path(__file__).resolve().parents[3].parent / "shared" / "traces" / "philly"


@dataclass(slots=True)
class PhillyPartition:
    """One VC: its own cluster and the jobs submitted to it."""

    vc: str
    nodes: list[NodeState]
    jobs: list[TraceJob]

    @property
    def gpus(self) -> int:
        return sum(len(n.gpus) for n in self.nodes)


def restart_penalty(job: TraceJob) -> float:
    gpus = job.total_gpus
    if gpus <= 1:
        return RESTART_PENALTY_1_GPU_S
    if gpus <= GPUS_PER_NODE:
        return RESTART_PENALTY_1_NODE_S
    return RESTART_PENALTY_MULTI_NODE_S


def _nodes(vc: str, gpus: int, scale: float) -> list[NodeState]:
    count = max(1, int(gpus * scale) // GPUS_PER_NODE)
    return [
        NodeState(f"{vc}-{i}", NODE_CPUS, NODE_MEMORY_BYTES,
                  [GPU(k, GPU_TYPE, GPU_MEMORY_BYTES) for k in range(GPUS_PER_NODE)], {"vc": vc})
        for i in range(count)
    ]


def load_philly(directory: str | Path | None = None, scale: float = 1.0) -> list[PhillyPartition]:
    """The replay's VCs, each with its nodes (capacity × ``scale``) and its jobs sorted by submit time."""
    if not 0 < scale <= 16:
        raise SpecError(f"philly capacity scale must be in (0, 16], got {scale}")
    d = Path(directory) if directory is not None else default_philly_dir()
    trace, vcs_file = d / "philly.csv", d / "vcs.csv"
    if not trace.is_file() or not vcs_file.is_file():
        raise SpecError(f"{d}: expected philly.csv and vcs.csv (the Philly trace folder)")
    with vcs_file.open(newline="") as fh:
        capacity = {row["vc"]: int(row["gpus"]) for row in csv.DictReader(fh)}
    jobs: dict[str, list[TraceJob]] = {vc: [] for vc in capacity}
    start_s = REPLAY_START.timestamp()
    with trace.open(newline="") as fh:
        for row, rec in enumerate(csv.DictReader(fh), start=2):
            vc = rec["cluster"]
            if vc not in capacity:
                continue
            when = datetime.strptime(rec["timestamp"], _TIME_FORMAT)
            if not REPLAY_START <= when < REPLAY_END:
                continue
            gpus = int(rec["num_gpus"])
            replicas = 1 if gpus <= GPUS_PER_NODE else -(-gpus // GPUS_PER_NODE)
            per_replica = gpus if replicas == 1 else GPUS_PER_NODE
            jobs[vc].append(TraceJob(
                id=f"philly-{row}", submit_time=when.timestamp() - start_s, duration=float(rec["duration"]),
                resources=Resources(0.0, 0, float(per_replica)), replicas=replicas, project=vc, user=vc,
            ))
    out = []
    for vc, gpus in capacity.items():
        vc_jobs = sorted(jobs[vc], key=lambda j: (j.submit_time, j.id))
        out.append(PhillyPartition(vc, _nodes(vc, gpus, scale), vc_jobs))
    return out
