"""Job traces for the simulator: one ``TraceJob`` per submitted job, read from CSV or JSONL.

Columns / keys (only ``submit_time`` and ``duration`` are required):

| name | meaning | default |
|---|---|---|
| id | job id | row number |
| submit_time | seconds from the trace's start | required |
| duration | seconds of execution (no queueing) | required |
| cpus | CPUs per replica | 1 |
| memory | per replica, bytes or '4g' | 2g |
| gpus | GPUs per replica (below 1 = a share of one GPU) | 0 |
| gpu_fraction | share of one GPU per replica; overrides gpus when set | — |
| gpu_type | required GPU model | any |
| gpu_memory | least memory of each GPU it gets, bytes or '40g' (needs gpus) | any |
| replicas | gang size (all start together) | 1 |
| project, user | tenancy (fair share, quotas) | default |
| priority | higher runs first | 0 |
| preemptible | may be preempted | true |
| cohort | the batch it was submitted with (sweep, grid) | assigned as the server does |
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdock.errors import SpecError
from deepdock.scheduler.types import Resources
from deepdock.specs.common import parse_bytes

DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_BYTES = 2 * 1024**3


@dataclass(slots=True)
class TraceJob:
    id: str
    submit_time: float
    duration: float
    resources: Resources
    replicas: int = 1
    gpu_type: str | None = None
    project: str = "default"
    user: str = "default"
    priority: int = 0
    preemptible: bool = True
    # Explicit batch name; when None the simulator assigns one as the server does (scheduler/cohort.py).
    cohort: str | None = None
    # The least memory (bytes) of each GPU it may use; None: any (the cluster's gpu_memory is per node type).
    gpu_memory: int | None = None

    @property
    def total_gpus(self) -> float:
        return self.resources.gpus * self.replicas


_TRUE = {"1", "true", "yes", "y", "t"}


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def job_from_record(rec: dict[str, Any], row: int, source: str) -> TraceJob:
    where = f"{source}: row {row}"
    try:
        if _blank(rec.get("submit_time")) or _blank(rec.get("duration")):
            raise ValueError("submit_time and duration are required")
        gpus = 0.0 if _blank(rec.get("gpus")) else float(rec["gpus"])
        if not _blank(rec.get("gpu_fraction")):
            gpus = float(rec["gpu_fraction"])
            if not 0 < gpus < 1:
                raise ValueError("gpu_fraction must be between 0 and 1")
        if gpus > 1 and gpus != int(gpus):
            raise ValueError("more than one GPU must be a whole number")
        memory = DEFAULT_MEMORY_BYTES if _blank(rec.get("memory")) else parse_bytes(rec["memory"])
        cpus = DEFAULT_CPUS if _blank(rec.get("cpus")) else float(rec["cpus"])
        replicas = 1 if _blank(rec.get("replicas")) else int(rec["replicas"])
        duration = float(rec["duration"])
        if duration < 0 or replicas < 1 or cpus < 0 or gpus < 0:
            raise ValueError("duration, cpus and gpus must be >= 0 and replicas >= 1")
        gpu_memory = None if _blank(rec.get("gpu_memory")) else parse_bytes(rec["gpu_memory"])
        if gpu_memory is not None and (gpu_memory <= 0 or gpus == 0):
            raise ValueError("gpu_memory must be positive and needs gpus")
        preemptible = rec.get("preemptible", True)
        if isinstance(preemptible, str):
            preemptible = preemptible.strip().lower() in _TRUE if preemptible.strip() else True
        return TraceJob(
            id=str(rec["id"]) if not _blank(rec.get("id")) else f"job-{row}",
            submit_time=float(rec["submit_time"]),
            duration=duration,
            resources=Resources(cpus, memory, gpus),
            replicas=replicas,
            gpu_type=None if _blank(rec.get("gpu_type")) else str(rec["gpu_type"]),
            project=str(rec.get("project") or "default"),
            user=str(rec.get("user") or "default"),
            priority=0 if _blank(rec.get("priority")) else int(rec["priority"]),
            preemptible=bool(preemptible),
            cohort=None if _blank(rec.get("cohort")) else str(rec["cohort"]),
            gpu_memory=gpu_memory,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def load_trace(path: str | Path) -> list[TraceJob]:
    """Read a CSV (header row) or JSONL (one object per line) trace, sorted by submit time."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such trace file")
    jobs: list[TraceJob] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open() as fh:
            for row, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SpecError(f"{path}: line {row}: not JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise SpecError(f"{path}: line {row}: expected an object")
                jobs.append(job_from_record(rec, row, str(path)))
    else:
        with path.open(newline="") as fh:
            for row, rec in enumerate(csv.DictReader(fh), start=2):
                jobs.append(job_from_record(rec, row, str(path)))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise SpecError(f"{path}: job ids must be unique")
    jobs.sort(key=lambda j: (j.submit_time, j.id))
    return jobs
