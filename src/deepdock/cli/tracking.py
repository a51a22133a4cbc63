"""``deepdock metrics | params | compare | artifacts | job rerun``: what jobs tracked, and exact re-runs."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deepdock.cli.output import api_errors, client, console, human_bytes, when, write_chunks

artifacts_app = typer.Typer(help="A job's files: what it wrote to $DEEPDOCK_ARTIFACTS_DIR, and its checkpoints.",
                            no_args_is_help=True)
job_app = typer.Typer(help="Job operations beyond run/ps/describe/logs/stop.", no_args_is_help=True)
FOLLOW_POLL_S = 1.0


def metrics(
    job: Annotated[str, typer.Argument(help="job id or name")],
    name: Annotated[str | None, typer.Option("--name", help="one series: its points")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new points until the job ends")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="step,value,time,attempt,rank rows (for --name)")] = False,
    max_points: Annotated[int | None, typer.Option(help="downsample (LTTB) to at most this many points")] = None,
) -> None:
    """A job's metric series with their final values, or one series' points."""
    with api_errors(), client() as c:
        if name is None:
            summary = c.metrics(job)
            table = Table("metric", "last value", "step", "attempt", "points")
            for s in summary.series:
                table.add_row(s.name, f"{s.value:.6g}", str(s.step), str(s.attempt), str(s.count))
            console.print(table)
            return
        writer = csv.writer(sys.stdout) if as_csv else None
        if writer is not None:
            writer.writerow(["step", "value", "time", "attempt", "rank"])
        last: int | None = None
        while True:
            series = c.series(job, name, max_points=max_points, after_step=last if follow else None)
            for step, value, at, attempt, rank in zip(series.steps, series.values, series.times, series.attempts,
                                                      series.ranks, strict=True):
                if writer is not None:
                    writer.writerow([step, repr(value), f"{at:.3f}", attempt, rank])
                else:
                    console.print(f"{step:>8}  {value:.6g}  (attempt {attempt}, rank {rank})", highlight=False)
                last = step if last is None else max(last, step)
            sys.stdout.flush()
            if not follow or c.status(job).status.terminal:
                return
            time.sleep(FOLLOW_POLL_S)


def params(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """The hyper-parameters a job logged."""
    with api_errors(), client() as c:
        out = c.params(job)
    table = Table("param", "value")
    for key, value in out.params.items():
        table.add_row(key, str(value))
    console.print(table)


def compare(jobs: Annotated[list[str], typer.Argument(help="two or more jobs")]) -> None:
    """Params and final metrics of several jobs, side by side."""
    with api_errors(), client() as c:
        runs = c.compare(jobs)
    table = Table("", *[f"{r.name}\n{r.id}" for r in runs])
    table.add_row("status", *[str(r.status) for r in runs])
    for key in sorted({k for r in runs for k in r.params}):
        table.add_row(f"param {key}", *[str(r.params.get(key, "")) for r in runs])
    for key in sorted({k for r in runs for k in r.metrics}):
        table.add_row(f"metric {key}", *[f"{r.metrics[key]:.6g}" if key in r.metrics else "" for r in runs])
    console.print(table)


@artifacts_app.command("ls")
def artifacts_ls(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """Every file a job left, per attempt and rank, and its checkpoints."""
    with api_errors(), client() as c:
        files = c.artifacts(job)
    table = Table("path", "size", "modified")
    for f in files:
        table.add_row(f.path, human_bytes(f.size), when(f.modified_at))
    console.print(table)


@artifacts_app.command("get")
def artifacts_get(
    job: Annotated[str, typer.Argument(help="job id or name")],
    path: Annotated[str, typer.Argument(help="as `artifacts ls` shows it, or relative to the last attempt's rank 0")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here instead of stdout")] = None,
) -> None:
    """Download one of a job's files."""
    with api_errors(), client() as c:
        chunks = c.artifact(job, path)
        if output is None:
            write_chunks(chunks)
            return
        with output.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
    console.print(f"wrote {output}")


@job_app.command("rerun")
def rerun(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """Submit a job again exactly: its recorded spec, code package and image tag."""
    with api_errors(), client() as c:
        out = c.rerun(job)
    console.print(f"submitted [bold]{out.id}[/bold] ({out.name}), a re-run of {job}")


@job_app.command("checkpoints")
def checkpoints(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """The checkpoints a job saved, and which ones the platform keeps."""
    with api_errors(), client() as c:
        rows = c.checkpoints(job)
    table = Table("name", "attempt", "rank", "step", "size", "status", "saved")
    for r in rows:
        table.add_row(r.name, str(r.attempt), str(r.rank), str(r.step), human_bytes(r.size), r.status, when(r.created_at))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(metrics)
    app.command()(params)
    app.command()(compare)
    app.add_typer(artifacts_app, name="artifacts")
    app.add_typer(job_app, name="job")
