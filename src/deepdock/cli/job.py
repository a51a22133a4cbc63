"""``deepdock run | ps | describe | logs | stop``: jobs (top-level commands, the ones used most)."""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from deepdock.api.enums import JobStatus
from deepdock.cli.output import (
    ago,
    api_errors,
    client,
    console,
    err_console,
    human_bytes,
    size_option,
    stream_logs,
    when,
    write_chunks,
)
from deepdock.specs.common import parse_model
from deepdock.specs.env import load_env_spec
from deepdock.specs.job import JobSpec, load_job_spec

# What ``ps`` lists without --all: the jobs that have not ended.
ACTIVE_OR_QUEUED = [s for s in JobStatus if not s.terminal]
# Jobs per request when ``ps`` pages (the server answers at most 1000).
PS_PAGE_SIZE = 1000


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)


def _inline_spec(command: list[str], env_file: Path | None, image: str | None, name: str | None, cpus: float,
                 memory: str, gpus: float, code: Path | None, project: str, priority: int) -> JobSpec:
    data: dict[str, object] = {
        "name": name or Path(command[0]).name.replace(".", "-").lower() or "job",
        "command": command,
        "resources": {"cpus": cpus, "memory": size_option(memory, "--memory"), "gpus": gpus},
        "project": project,
        "priority": priority,
        "code": str((code or Path.cwd()).resolve()),
    }
    if env_file is not None:
        data["environment"] = load_env_spec(env_file).model_dump(mode="json")
    if image is not None:
        data["image"] = image
    return parse_model(JobSpec, data, "command line")


def run(
    command: Annotated[list[str] | None, typer.Argument(help="command, after --")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="job spec YAML")] = None,
    env: Annotated[Path | None, typer.Option("--env", help="environment spec YAML")] = None,
    image: Annotated[str | None, typer.Option(help="run this image instead of an environment")] = None,
    name: Annotated[str | None, typer.Option(help="job name")] = None,
    cpus: Annotated[float, typer.Option(help="CPUs per replica")] = 1.0,
    memory: Annotated[str, typer.Option(help="memory per replica, e.g. 4g")] = "2g",
    gpus: Annotated[float, typer.Option(help="GPUs per replica (0.25 = a quarter of one)")] = 0,
    code: Annotated[Path | None, typer.Option(help="code folder (default: the current one); "
                                                   ".deepdockignore in it says what to leave out")] = None,
    project: Annotated[str, typer.Option(help="project")] = "default",
    priority: Annotated[int, typer.Option(help="higher runs first")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="stream logs until the job ends")] = False,
) -> None:
    """Submit a job from a spec file, or inline: deepdock run --env env.yaml --cpus 2 -- python train.py"""
    with api_errors():
        if file is not None:
            spec = load_job_spec(file)
        elif command:
            if (env is None) == (image is None):
                raise typer.BadParameter("give --env ENV.yaml or --image IMAGE with an inline command")
            spec = _inline_spec(command, env, image, name, cpus, memory, gpus, code, project, priority)
        else:
            raise typer.BadParameter("give -f JOB.yaml, or a command after --")
        with client() as c:
            job = c.run(spec, warn=_warn)
            console.print(f"job [bold]{job.id}[/bold] ({job.name}) {job.status}")
            if follow:
                status = stream_logs(c, job.id)
                raise typer.Exit(0 if status == JobStatus.SUCCEEDED else 1)


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="include finished jobs")] = False,
    status: Annotated[list[str] | None, typer.Option(help="filter by status, repeatable")] = None,
    project: Annotated[str | None, typer.Option(help="filter by project")] = None,
    user: Annotated[str | None, typer.Option(help="filter by the user who submitted them")] = None,
    limit: Annotated[int, typer.Option(min=0, help="show at most this many, newest first (0: all of them, "
                                                   "read page by page)")] = 50,
) -> None:
    """List jobs (active ones unless --all), newest first; says so when there are more than --limit."""
    # --status stays a plain string: the server names the valid ones in its error.
    statuses = status or (None if all_ else ACTIVE_OR_QUEUED)
    with api_errors(), client() as c:
        # One more than asked for tells whether there are more; 0 reads every page.
        wanted = None if limit == 0 else limit + 1
        page_size = PS_PAGE_SIZE if wanted is None else min(wanted, PS_PAGE_SIZE)
        jobs = list(islice(c.iter_jobs(status=statuses, project=project, page_size=page_size, user=user), wanted))
    truncated = wanted is not None and len(jobs) > limit
    jobs = jobs[:limit] if truncated else jobs
    table = Table("ID", "NAME", "PROJECT", "STATUS", "RESOURCES", "SUBMITTED", "REASON")
    for j in jobs:
        if j.status == JobStatus.QUEUED:
            reason = j.pending_reason.message if j.pending_reason else ""
        else:
            reason = j.status_reason
        res = f"{j.replicas}x {j.cpus:g}cpu {human_bytes(j.memory)}" + (f" {j.gpus:g}gpu" if j.gpus else "")
        table.add_row(j.id, j.name, j.project, j.status, res, ago(j.submitted_at), reason[:70])
    console.print(table)
    if truncated:
        console.print(f"showing the newest {limit} jobs; there are more: --limit N for more, or --limit 0 for all",
                      highlight=False)


def describe(job: str) -> None:
    """Everything about one job: status, why it is pending, attempts, placement, history."""
    with api_errors(), client() as c:
        d = c.job(job)
    console.print(f"[bold]{d.name}[/bold] ({d.id})  project={d.project}  user={d.user}")
    console.print(f"status:   {d.status}  {d.status_reason}")
    if d.pending_reason:
        p = d.pending_reason
        console.print(f"pending:  {p.code}: {p.message} (position {p.position} in queue)")
    if d.retry_at is not None and d.status == JobStatus.QUEUED:
        wait = max(0.0, d.retry_at - time.time())
        console.print(f"next attempt: not before {when(d.retry_at)} (in {wait:.0f}s, backing off after a failure)")
    console.print(f"image:    {d.image or '(environment, built at start)'}")
    console.print(f"request:  {d.replicas} x ({d.cpus:g} CPUs, {human_bytes(d.memory)}, {d.gpus:g} GPUs)  "
                  f"priority={d.priority}  retries left={d.retries_left}")
    console.print(f"attained: {d.attained_service:,.0f} GPU-s  cohort={d.cohort or '-'}")
    console.print(f"artifacts: {d.artifacts_dir}  (`deepdock artifacts ls {d.id}`)")
    if d.code_sha256:
        console.print(f"code:     {d.code_sha256}")
    if d.rerun_of:
        console.print(f"rerun of: {d.rerun_of}")
    for a in d.attempt_list:
        network = f"  network={a.network}" + (f" port={a.master_port}" if a.master_port else "") \
            if a.network != "none" else ""
        console.print(f"attempt {a.number}: {a.status} {a.reason}{network}")
        for r in a.replicas:
            gpus = f" gpus={r.gpu_indices}" if r.gpu_indices else ""
            address = f" at {r.address}" if r.address else ""
            console.print(f"  rank {r.rank} on {r.node}{address}{gpus}: {r.status} exit={r.exit_code}"
                          f"{' OOMKilled' if r.oom_killed else ''} container={r.container_name}")
    for g in d.held_gpus:
        reading = "no reading yet" if g.sampled_at is None else (
            f"{'-' if g.utilization_percent is None else f'{g.utilization_percent:g}%'} busy, memory "
            f"{'-' if g.memory_used is None else human_bytes(g.memory_used)}"
            f"{'' if g.memory_total is None else '/' + human_bytes(g.memory_total)}")
        console.print(f"gpu:      rank {g.rank} on {g.node}, GPU {g.index}: {reading}")
    table = Table("TIME", "FROM", "TO", "REASON")
    for e in d.events:
        table.add_row(when(e.at), e.from_status or "", e.to_status, e.reason)
    console.print(table)


def logs(
    job: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends")] = False,
    attempt: Annotated[int | None, typer.Option(help="attempt number (default: the latest)")] = None,
    rank: Annotated[int, typer.Option(help="replica rank")] = 0,
) -> None:
    """Print a job's logs (kept by the server after the container is gone)."""
    with api_errors(), client() as c:
        if follow and attempt is None and rank == 0:
            stream_logs(c, c.job(job).id)
            return
        write_chunks(c.logs(job, follow=follow, attempt=attempt, rank=rank))


def stop(job: str) -> None:
    """Stop a job: SIGTERM, a grace period (default 30 s), then SIGKILL."""
    with api_errors(), client() as c:
        j = c.stop(job)
    console.print(f"job {j.id}: {'stopped' if j.status == JobStatus.STOPPED else 'stopping'}")


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_interspersed_args": False})(run)
    app.command()(ps)
    app.command()(describe)
    app.command()(logs)
    app.command()(stop)
