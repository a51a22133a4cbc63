"""``deepdock serve | predict`` and ``deepdock service ...``: a model version served by replicas."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from deepdock.api import ServiceDetail
from deepdock.api.enums import ServiceStatus
from deepdock.cli.output import api_errors, client, console, size_option, when, write_chunks
from deepdock.client import Client
from deepdock.specs.common import parse_model
from deepdock.specs.service import ServiceSpec, load_service_spec

service_app = typer.Typer(help="Services: a model version served by replicas behind one endpoint.",
                          no_args_is_help=True)
# How often `serve --wait` and `service rollback --wait` look again.
POLL_S = 0.25
DEFAULT_WAIT_S = 600.0


def _print_service(s: ServiceDetail) -> None:
    traffic = ", ".join(f"r{rev} {share:g}%" for rev, share in s.traffic.items()) or "none"
    console.print(f"[bold]{s.name}[/bold] ({s.project}) {s.status}: {s.status_reason}")
    console.print(f"  model {s.model}; revision {s.stable_revision or '-'} serving, {s.target_revision or '-'} target; "
                  f"{s.ready_replicas}/{s.desired_replicas} ready; traffic {traffic}")
    console.print(f"  endpoint {s.endpoint}/v2/models/{s.model.split(':')[0].split('@')[0]}/infer", highlight=False)


def wait_ready(c: Client, name: str, timeout_s: float, *, revision: int | None = None) -> ServiceDetail:
    """Until the service serves (``revision``, when given, as its only revision) with every replica ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = c.service(name)
        settled = s.stable_revision is not None and s.stable_revision == s.target_revision \
            and (revision is None or s.stable_revision == revision) and s.ready_replicas >= s.desired_replicas
        if settled and s.status == ServiceStatus.READY:
            return s
        if s.status == ServiceStatus.FAILED or (revision is not None and s.target_revision != revision
                                                and s.stable_revision != revision):
            console.print(f"[red]{s.name}: {s.status_reason or s.status}[/red]")
            for e in s.events[-5:]:
                console.print(f"  {when(e.at)} {e.kind}: {e.message}", highlight=False)
            raise typer.Exit(1)
        if time.monotonic() > deadline:
            console.print(f"[red]{s.name} not ready after {timeout_s:g}s: {s.status_reason}[/red]")
            raise typer.Exit(1)
        time.sleep(POLL_S)


def serve(
    model: Annotated[str | None, typer.Argument(help="NAME:VERSION or NAME@ALIAS (or give -f)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="a service spec (YAML)")] = None,
    name: Annotated[str | None, typer.Option(help="service name (default: the model's)")] = None,
    replicas: Annotated[int, typer.Option(help="replicas")] = 1,
    cpus: Annotated[float, typer.Option(help="CPUs per replica")] = 1.0,
    memory: Annotated[str, typer.Option(help="memory per replica, e.g. 1g")] = "1g",
    gpus: Annotated[float, typer.Option(help="GPUs per replica (below 1: a share of one)")] = 0.0,
    runtime: Annotated[str | None, typer.Option(help="onnx or torchscript (default: onnx when exported)")] = None,
    max_batch_size: Annotated[int, typer.Option(help="adaptive batching: most rows per batch")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="adaptive batching: longest wait for a batch to fill")] = 2.0,
    project: Annotated[str, typer.Option(help="project")] = "default",
    wait: Annotated[bool, typer.Option(help="wait until every replica is ready")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = DEFAULT_WAIT_S,
) -> None:
    """Serve a model version: its serving image, N replicas placed by the scheduler, one endpoint."""
    if (model is None) == (file is None):
        raise typer.BadParameter("give a model (NAME:VERSION or NAME@ALIAS) or --file SPEC")
    if file is not None:
        spec = load_service_spec(file)
    else:
        assert model is not None
        default_name = model.split("@")[0].split(":")[0].lower().replace("_", "-").replace(".", "-")
        spec = parse_model(ServiceSpec, {
            "name": name or default_name, "model": model, "project": project, "runtime": runtime, "replicas": replicas,
            "resources": {"cpus": cpus, "memory": size_option(memory, "--memory"), "gpus": gpus},
            "batching": {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}}, "command line")
    started = time.monotonic()
    with api_errors(), client() as c:
        s = c.apply_service(spec)
        console.print(f"service [bold]{s.name}[/bold]: revision {s.target_revision} ({s.status})")
        if wait:
            s = wait_ready(c, s.name, timeout, revision=s.target_revision)
            console.print(f"ready in {time.monotonic() - started:.1f}s")
    _print_service(s)


@service_app.command("apply")
def apply(file: Annotated[Path, typer.Option("--file", "-f", help="a service spec (YAML)")],
          wait: Annotated[bool, typer.Option(help="wait until it is rolled out")] = True,
          timeout: Annotated[float, typer.Option(help="seconds to wait")] = DEFAULT_WAIT_S) -> None:
    """Create or change a service from its spec."""
    spec = load_service_spec(file)
    with api_errors(), client() as c:
        s = c.apply_service(spec)
        if wait:
            s = wait_ready(c, s.name, timeout, revision=s.target_revision)
    _print_service(s)


@service_app.command("ls")
def ls() -> None:
    """Services you can see."""
    with api_errors(), client() as c:
        services = c.services()
    table = Table("name", "project", "model", "status", "ready", "revision", "traffic", "req/s", "p99", "endpoint")
    for s in services:
        traffic = " ".join(f"r{rev}:{share:g}%" for rev, share in s.traffic.items())
        table.add_row(s.name, s.project, s.model, str(s.status), f"{s.ready_replicas}/{s.desired_replicas}",
                      f"{s.stable_revision or '-'}→{s.target_revision or '-'}", traffic,
                      "-" if s.rps is None else f"{s.rps:.1f}", "-" if s.p99_ms is None else f"{s.p99_ms:.1f} ms",
                      s.endpoint)
    console.print(table)


@service_app.command("describe")
def describe(name: str) -> None:
    """Revisions, replicas (node, address, readiness, weight) and the rollout's recent events."""
    with api_errors(), client() as c:
        s = c.service(name)
    _print_service(s)
    revisions = Table("revision", "model", "runtime", "status", "reason", "image")
    for r in s.revisions:
        revisions.add_row(str(r.number), f"{r.model}:{r.version}", r.runtime, str(r.status), r.reason, r.image or "")
    console.print(revisions)
    replicas = Table("job", "revision", "status", "node", "address", "ready", "weight", "restarts")
    for p in s.replicas:
        status = str(p.status) + (" (retiring)" if p.retiring else "") + (f": {p.pending}" if p.pending else "")
        replicas.add_row(p.job, str(p.revision), status, p.node or "",
                         f"{p.address}:{p.port}" if p.port else "", "yes" if p.ready else "no", str(p.weight),
                         str(p.restarts))
    console.print(replicas)
    for e in s.events:
        console.print(f"{when(e.at)}  {e.kind:<12} {e.message}" + (f" ({e.by})" if e.by else ""), highlight=False)


@service_app.command("logs")
def logs(name: str,
         replica: Annotated[str | None, typer.Option(help="a replica's job id (default: the first ready one)")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """A replica's log (each replica is a job: `deepdock logs JOB` works too)."""
    with api_errors(), client() as c:
        s = c.service(name)
        jobs = [p.job for p in sorted(s.replicas, key=lambda p: (not p.ready, p.retiring))]
        if replica is None and not jobs:
            console.print(f"service {name} has no replicas")
            raise typer.Exit(1)
        write_chunks(c.logs(replica or jobs[0], follow=follow))


@service_app.command("update")
def update(name: str,
           model: Annotated[str | None, typer.Option(help="NAME:VERSION or NAME@ALIAS")] = None,
           canary: Annotated[str | None, typer.Option(help="first canary step, e.g. 10%; 0 for a rolling update")] = None,
           runtime: Annotated[str | None, typer.Option()] = None,
           cpus: Annotated[float | None, typer.Option()] = None,
           memory: Annotated[str | None, typer.Option()] = None,
           max_batch_size: Annotated[int | None, typer.Option()] = None,
           max_wait_ms: Annotated[float | None, typer.Option()] = None,
           wait: Annotated[bool, typer.Option(help="wait until it is rolled out or rolled back")] = False,
           timeout: Annotated[float, typer.Option()] = DEFAULT_WAIT_S) -> None:
    """Change what is served (a new revision), rolled out under the service's policy or a canary."""
    changes: dict[str, Any] = {"model": model, "runtime": runtime, "cpus": cpus, "max_batch_size": max_batch_size,
                               "max_wait_ms": max_wait_ms}
    if memory is not None:
        changes["memory"] = size_option(memory, "--memory")
    if canary is not None:
        try:
            changes["canary"] = float(canary.rstrip("%"))
        except ValueError:
            raise typer.BadParameter("--canary takes a percent, e.g. 10%") from None
    with api_errors(), client() as c:
        s = c.update_service(name, **{k: v for k, v in changes.items() if v is not None})
        console.print(f"{s.name}: rolling out revision {s.target_revision}")
        if wait:
            s = wait_ready(c, name, timeout, revision=s.target_revision)
    _print_service(s)


@service_app.command("rollback")
def rollback(name: str, wait: Annotated[bool, typer.Option()] = False,
             timeout: Annotated[float, typer.Option()] = DEFAULT_WAIT_S) -> None:
    """Back to the previous revision (or abandon the rollout under way)."""
    with api_errors(), client() as c:
        s = c.rollback_service(name)
        console.print(f"{s.name}: rolling back to revision {s.target_revision}")
        if wait:
            s = wait_ready(c, name, timeout, revision=s.target_revision)
    _print_service(s)


@service_app.command("scale")
def scale(name: str,
          replicas: Annotated[int | None, typer.Option(help="a fixed count (autoscaling off)")] = None,
          min: Annotated[int | None, typer.Option("--min", help="autoscaling: fewest replicas")] = None,
          max: Annotated[int | None, typer.Option("--max", help="autoscaling: most replicas")] = None,
          target_concurrency: Annotated[float | None, typer.Option(help="in-flight requests per replica")] = None,
          target_rps: Annotated[float | None, typer.Option(help="requests per second per replica")] = None) -> None:
    """A fixed replica count, or autoscaling between --min and --max on a target."""
    with api_errors(), client() as c:
        s = c.scale_service(name, replicas=replicas, min=min, max=max, target_concurrency=target_concurrency,
                            target_rps=target_rps)
    _print_service(s)


@service_app.command("rm")
def rm(name: str) -> None:
    """Stop every replica and remove the service."""
    with api_errors(), client() as c:
        c.delete_service(name)
    console.print(f"service {name} removed")


def predict(
    name: str,
    input: Annotated[Path, typer.Option("--input", "-i", help="a .npy array (one row per sample)")],
    input_name: Annotated[str | None, typer.Option(help="the model input's name (default: its first)")] = None,
) -> None:
    """Send a .npy array to a service (v2 protocol through its endpoint); print the outputs (argmax too)."""
    import numpy as np

    from deepdock.serving.tensors import NUMPY_TO_V2

    array = np.load(input)
    with api_errors(), client() as c:
        s = c.service(name)
        model_name = s.model.split("@")[0].split(":")[0]
        version = c.model_version(s.model, s.project)
        inputs = (version.signature or {}).get("inputs") or [{"name": "input"}]
        chosen = input_name or inputs[0]["name"]
        dtype = np.dtype(inputs[0].get("dtype", str(array.dtype))) if input_name is None else array.dtype
        array = array.astype(dtype, copy=False)
        body = {"inputs": [{"name": chosen, "shape": list(array.shape), "datatype": NUMPY_TO_V2[array.dtype.name],
                            "data": array.ravel().tolist()}]}
        result = c.infer(s.endpoint, model_name, body)
    for out in result.get("outputs", []):
        values = np.asarray(out["data"]).reshape(out["shape"])
        console.print(f"{out['name']} {out['datatype']} {out['shape']}")
        console.print(values)
        if values.ndim == 2:
            console.print(f"argmax: {values.argmax(axis=1).tolist()}")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(predict)
    app.add_typer(service_app, name="service")
