"""``deepdock sim``: replay a trace under several scheduling policies and compare them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from deepdock.errors import DeepdockError

TABLE_WIDTH_CHARS = 160


def sim(
    trace: Annotated[str, typer.Option("--trace", help="CSV/JSONL trace, 'philly', or a Philly folder")],
    policy: Annotated[list[str], typer.Option("--policy", help="policy name; repeat to compare")] = [],  # noqa: B006
    cluster: Annotated[Path | None, typer.Option("--cluster", help="cluster YAML (not for Philly)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON here")] = None,
    philly_capacity: Annotated[float, typer.Option(help="scale every Philly VC's GPUs by this")] = 1.0,
    workers: Annotated[int, typer.Option(help="worker processes (policies run in parallel)")] = 2,
) -> None:
    """Simulate the scheduler on a job trace: one row per policy (JCT, queueing, makespan, utilization)."""
    from rich.console import Console

    from deepdock.settings import get_settings
    from deepdock.sim.runner import comparison, load_workload, render_table, run_policies

    # The table has ten columns: when output is not a terminal (a pipe, a log), do not squeeze it to 80.
    console = Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH_CHARS)
    names = policy or ["default"]
    try:
        started = time.perf_counter()
        workload = load_workload(trace, str(cluster) if cluster else None, philly_capacity,
                                 get_settings().philly_dir)
        results = run_policies(names, workload, workers)
        wall = time.perf_counter() - started
    except DeepdockError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    rows = comparison(results)
    jobs = sum(len(p.jobs) for p in workload)
    gpus = sum(len(n.gpus) for p in workload for n in p.nodes)
    console.print(render_table(rows, f"{trace}: {jobs:,} jobs, {gpus} GPUs, {len(workload)} cluster(s)"))
    console.print(f"wall time {wall:.1f} s with {workers} worker(s)")
    if json_out is not None:
        payload = {"trace": trace, "jobs": jobs, "gpus": gpus, "wall_seconds": wall,
                   "philly_capacity": philly_capacity, "results": rows}
        json_out.write_text(json.dumps(payload, indent=2))


def register(app: typer.Typer) -> None:
    app.command("sim")(sim)
