"""Run several policies over one workload (optionally split into independent partitions) in parallel
worker processes, and render the comparison."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepdock.scheduler.policies import get_policy
from deepdock.scheduler.types import NodeState, Resources
from deepdock.sim.cluster import load_cluster
from deepdock.sim.metrics import summarize
from deepdock.sim.philly import default_philly_dir, load_philly
from deepdock.sim.simulator import SimResult, simulate
from deepdock.sim.trace import TraceJob, load_trace

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


@dataclass(slots=True)
class Partition:
    """An independent cluster and its jobs (Philly: one VC)."""

    name: str
    jobs: list[TraceJob]
    nodes: list[NodeState]
    quotas: dict[str, Resources] = field(default_factory=dict)


def load_workload(
    trace: str, cluster: str | None, philly_capacity: float, philly_dir: Path | None = None
) -> list[Partition]:
    """``trace`` is ``philly`` (the folder ``philly_dir``, by default ``default_philly_dir()``), a Philly
    folder (with philly.csv and vcs.csv), or a CSV/JSONL trace file (which then needs ``cluster``, a YAML
    file)."""
    path = Path(trace)
    if trace == "philly" or (path.is_dir() and (path / "philly.csv").is_file()):
        folder = (philly_dir or default_philly_dir()) if trace == "philly" else path
        return [Partition(p.vc, p.jobs, p.nodes) for p in load_philly(folder, philly_capacity)]
    if cluster is None:
        from deepdock.errors import SpecError

        raise SpecError("a trace file needs --cluster FILE (YAML; see docs/scheduler.md)")
    spec = load_cluster(cluster)
    return [Partition("all", load_trace(path), spec.to_nodes(), spec.to_quotas())]


# Workers inherit the workload through fork instead of pickling it once per task.
_WORKLOAD: list[Partition] = []


def _run_one(task: tuple[str, int]) -> tuple[str, int, SimResult, float]:
    name, index = task
    part = _WORKLOAD[index]
    started = time.perf_counter()
    result = simulate(part.jobs, part.nodes, get_policy(name), quotas=part.quotas)
    return name, index, result, time.perf_counter() - started


def run_policies(
    policies: Sequence[str], workload: list[Partition], workers: int = DEFAULT_WORKERS
) -> dict[str, tuple[SimResult, float]]:
    """Every policy over every partition; returns per policy the merged result and its CPU seconds."""
    global _WORKLOAD
    for name in policies:
        get_policy(name)  # fail fast on an unknown name
    _WORKLOAD = workload
    # Biggest partitions first so the pool's tail is short.
    order = sorted(range(len(workload)), key=lambda i: -len(workload[i].jobs))
    tasks = [(name, i) for i in order for name in policies]
    parts: dict[str, dict[int, SimResult]] = {name: {} for name in policies}
    seconds: dict[str, float] = dict.fromkeys(policies, 0.0)
    if workers <= 1 or len(tasks) == 1:
        outcomes = map(_run_one, tasks)
        for name, i, res, s in outcomes:
            parts[name][i] = res
            seconds[name] += s
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for name, i, res, s in pool.map(_run_one, tasks):
                parts[name][i] = res
                seconds[name] += s
    return {
        name: (SimResult.merge(name, [parts[name][i] for i in range(len(workload))]), seconds[name])
        for name in policies
    }


def comparison(results: dict[str, tuple[SimResult, float]]) -> list[dict[str, Any]]:
    rows = []
    for res, secs in results.values():
        row = summarize(res)
        row["cpu_seconds"] = secs
        rows.append(row)
    return rows


def render_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    cols = [("policy", "policy"), ("jobs", "jobs"), ("JCT mean s", "jct_mean"), ("JCT p50 s", "jct_p50"),
            ("JCT p99 s", "jct_p99"), ("queue mean s", "queue_mean"), ("queue p99 s", "queue_p99"),
            ("makespan s", "makespan"), ("GPU util", "gpu_utilization"), ("preemptions", "preemptions")]
    for head, _ in cols:
        table.add_column(head, justify="left" if head == "policy" else "right")
    for row in rows:
        cells = []
        for _, key in cols:
            v = row.get(key)
            if key == "gpu_utilization" and v is not None:
                cells.append(f"{v:.1%}")
            elif isinstance(v, float):
                cells.append(f"{v:,.0f}")
            else:
                cells.append(str(v) if v is not None else "-")
        table.add_row(*cells)
    return table
