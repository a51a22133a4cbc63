"""`deepdock server | node | run | ps | describe | logs | stop | user | project` — thin calls through the client."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deepdock.cli.output import ago, console, err_console, human_bytes, when
from deepdock.client import Client
from deepdock.errors import DeepdockError
from deepdock.specs.common import parse_bytes, parse_model
from deepdock.specs.env import load_env_spec
from deepdock.specs.job import JobSpec, load_job_spec

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
WAIT_POLL_S = 0.5

node_app = typer.Typer(help="Docker engines that run jobs.", no_args_is_help=True)
user_app = typer.Typer(help="Users and their tokens (admin).", no_args_is_help=True)
project_app = typer.Typer(help="Projects and quotas.", no_args_is_help=True)


@contextmanager
def api_errors() -> Iterator[None]:
    """Any deepdock error becomes one red line and exit status 1 (no traceback for user errors)."""
    try:
        yield
    except DeepdockError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "",
    port: Annotated[int, typer.Option(help="port to listen on")] = 0,
    workers: Annotated[int, typer.Option(help="API worker processes (0 = one per core, at most 4)")] = 0,
) -> None:
    """Run the deepdock server (SQLite + artifacts under ~/.deepdock; the local engine is the first node)."""
    from deepdock.server.run import serve

    serve(host=host or None, port=port or None, workers=workers or None)


@node_app.command("add")
def node_add(
    name: str,
    engine: Annotated[str, typer.Option("--engine", help="unix:///var/run/docker.sock or tcp://HOST:2376")] = "",
    tls_ca: Annotated[str | None, typer.Option(help="CA certificate for a TLS engine")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="client certificate")] = None,
    tls_key: Annotated[str | None, typer.Option(help="client key")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
) -> None:
    """Register a Docker engine as a node."""
    labels = dict(item.partition("=")[::2] for item in label or [])
    with api_errors():
        with Client() as client:
            node = client.add_node(name, engine, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, labels=labels)
    console.print(f"node [bold]{node['name']}[/bold] added: {node['cpus']:g} CPUs, "
                  f"{human_bytes(node['memory'])}, {len(node['gpus'])} GPU(s)")


@node_app.command("ls")
def node_ls() -> None:
    """Nodes with capacity, what is allocated on them, and health."""
    with api_errors():
        with Client() as client:
            nodes = client.nodes()
    table = Table("NAME", "STATUS", "CPUS (alloc/total)", "MEMORY (alloc/total)", "GPUS", "ENGINE", "SEEN")
    for n in nodes:
        gpus = ", ".join(f"{g['index']}:{g['model']} {human_bytes(g['memory'])}" for g in n["gpus"]) or "0"
        status = n["status"] if not n["last_error"] else f"{n['status']} ({n['last_error'][:60]})"
        table.add_row(n["name"], status, f"{n['allocated_cpus']:g}/{n['cpus']:g}",
                      f"{human_bytes(n['allocated_memory'])}/{human_bytes(n['memory'])}",
                      f"{n['allocated_gpus']:g} used of [{gpus}]", n["engine_url"] or "default", ago(n["last_seen_at"]))
    console.print(table)


@node_app.command("drain")
def node_drain(name: str, undo: Annotated[bool, typer.Option("--undo", help="make it schedulable again")] = False) -> None:
    """Stop placing new jobs on a node (running ones continue)."""
    with api_errors():
        with Client() as client:
            client.set_node_status(name, "ready" if undo else "draining")
    console.print(f"node {name}: {'ready' if undo else 'draining'}")


@node_app.command("rm")
def node_rm(name: str, force: Annotated[bool, typer.Option(help="even if jobs run there")] = False) -> None:
    """Unregister a node."""
    with api_errors():
        with Client() as client:
            client.remove_node(name, force=force)
    console.print(f"node {name} removed")


def _inline_spec(command: list[str], env_file: Path | None, image: str | None, name: str | None, cpus: float,
                 memory: str, gpus: float, code: Path | None, project: str, priority: int) -> JobSpec:
    data: dict[str, object] = {
        "name": name or Path(command[0]).name.replace(".", "-").lower() or "job",
        "command": command,
        "resources": {"cpus": cpus, "memory": parse_bytes(memory), "gpus": gpus},
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
    code: Annotated[Path | None, typer.Option(help="code folder (default: the current one)")] = None,
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
        with Client() as client:
            job = client.run(spec)
            console.print(f"job [bold]{job['id']}[/bold] ({job['name']}) {job['status']}")
            if follow:
                status = stream_logs(client, job["id"])
                raise typer.Exit(0 if status == "SUCCEEDED" else 1)


def stream_logs(client: Client, job_id: str) -> str:
    """Follow the job's logs across attempts until it ends; returns its final status."""
    seen_attempt = 0
    while True:
        job = client.job(job_id)
        if job["status"] in TERMINAL and job["attempts"] <= seen_attempt:
            return str(job["status"])
        if job["attempts"] > seen_attempt and job["status"] not in ("QUEUED",):
            seen_attempt = job["attempts"]
            if seen_attempt > 1:
                err_console.print(f"[yellow]-- attempt {seen_attempt} --[/yellow]")
            for chunk in client.logs(job_id, follow=True, attempt=seen_attempt):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            continue
        time.sleep(WAIT_POLL_S)


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="include finished jobs")] = False,
    status: Annotated[list[str] | None, typer.Option(help="filter by status, repeatable")] = None,
    project: Annotated[str | None, typer.Option(help="filter by project")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
) -> None:
    """List jobs (active ones unless --all)."""
    statuses = status or (None if all_ else ["QUEUED", "SCHEDULED", "STARTING", "RUNNING"])
    with api_errors():
        with Client() as client:
            jobs = client.jobs(status=statuses, project=project, limit=limit)
    table = Table("ID", "NAME", "PROJECT", "STATUS", "RESOURCES", "SUBMITTED", "REASON")
    for j in jobs:
        reason = (j["pending_reason"] or {}).get("message") if j["status"] == "QUEUED" else j["status_reason"]
        res = f"{j['replicas']}x {j['cpus']:g}cpu {human_bytes(j['memory'])}" + (f" {j['gpus']:g}gpu" if j["gpus"] else "")
        table.add_row(j["id"], j["name"], j["project"], j["status"], res, ago(j["submitted_at"]), (reason or "")[:70])
    console.print(table)


def describe(job: str) -> None:
    """Everything about one job: status, why it is pending, attempts, placement, history."""
    with api_errors():
        with Client() as client:
            d = client.job(job)
    console.print(f"[bold]{d['name']}[/bold] ({d['id']})  project={d['project']}  user={d['user']}")
    console.print(f"status:   {d['status']}  {d['status_reason']}")
    if d["pending_reason"]:
        p = d["pending_reason"]
        console.print(f"pending:  {p['code']}: {p['message']} (position {p['position']} in queue)")
    console.print(f"image:    {d['image'] or '(environment, built at start)'}")
    console.print(f"request:  {d['replicas']} x ({d['cpus']:g} CPUs, {human_bytes(d['memory'])}, {d['gpus']:g} GPUs)  "
                  f"priority={d['priority']}  retries left={d['retries_left']}")
    console.print(f"service:  {d['attained_service']:,.0f} GPU-s attained  cohort={d['cohort'] or '-'}")
    console.print(f"artifacts: {d['artifacts_dir']}")
    for a in d["attempt_list"]:
        console.print(f"attempt {a['number']}: {a['status']} {a['reason']}")
        for r in a["replicas"]:
            gpus = f" gpus={r['gpu_indices']}" if r["gpu_indices"] else ""
            console.print(f"  rank {r['rank']} on {r['node']}{gpus}: {r['status']} exit={r['exit_code']}"
                          f"{' OOMKilled' if r['oom_killed'] else ''} container={r['container_name']}")
    table = Table("TIME", "FROM", "TO", "REASON")
    for e in d["events"]:
        table.add_row(when(e["at"]), e["from_status"] or "", e["to_status"], e["reason"])
    console.print(table)


def logs(
    job: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends")] = False,
    attempt: Annotated[int | None, typer.Option(help="attempt number (default: the latest)")] = None,
    rank: Annotated[int, typer.Option(help="replica rank")] = 0,
) -> None:
    """Print a job's logs (kept by the server after the container is gone)."""
    with api_errors():
        with Client() as client:
            if follow and attempt is None and rank == 0:
                stream_logs(client, client.job(job)["id"])
                return
            for chunk in client.logs(job, follow=follow, attempt=attempt, rank=rank):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()


def stop(job: str) -> None:
    """Stop a job: SIGTERM, a grace period (default 30 s), then SIGKILL."""
    with api_errors():
        with Client() as client:
            j = client.stop(job)
    console.print(f"job {j['id']}: {'stopped' if j['status'] == 'STOPPED' else 'stopping'}")


@user_app.command("add")
def user_add(name: str, project: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
             admin: bool = False) -> None:
    """Create a user; prints their API token once."""
    with api_errors():
        with Client() as client:
            u = client.create_user(name, projects=project or [], is_admin=admin)
    console.print(f"user {u['name']} created; token (shown once): {u['token']}")


@project_app.command("ls")
def project_ls() -> None:
    """Projects you can see, with quotas."""
    with api_errors():
        with Client() as client:
            projects = client.projects()
    table = Table("PROJECT", "QUOTA CPUS", "QUOTA MEMORY", "QUOTA GPUS")
    for p in projects:
        table.add_row(p["name"], str(p["quota_cpus"] or "-"), human_bytes(p["quota_memory"]), str(p["quota_gpus"] or "-"))
    console.print(table)


@project_app.command("quota")
def project_quota(name: str, cpus: float | None = None, memory: str | None = None, gpus: float | None = None) -> None:
    """Set a project's guaranteed quota (idle capacity beyond it may be borrowed)."""
    with api_errors():
        with Client() as client:
            client.set_quota(name, cpus=cpus, memory=parse_bytes(memory) if memory else None, gpus=gpus)
    console.print(f"project {name}: quota set")


def register(app: typer.Typer) -> None:
    from deepdock.cli.demo import demo

    app.command()(server)
    app.command(context_settings={"allow_interspersed_args": False})(run)
    app.command()(ps)
    app.command()(describe)
    app.command()(logs)
    app.command()(stop)
    app.command()(demo)
    app.add_typer(node_app, name="node")
    app.add_typer(user_app, name="user")
    app.add_typer(project_app, name="project")
