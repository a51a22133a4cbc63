"""`deepdock demo`: build a PyTorch CPU environment, train on the digits data in a limited container with
its loss curve tracked, register the model, export it to TorchScript and ONNX with a parity check, point
``production`` at it, print the version with its lineage, then serve it (2 replicas behind the gateway),
judge it on the held-out digits through the endpoint, and roll a second version out and back
(``demo_serving``)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import typer

from deepdock.api.enums import JobStatus
from deepdock.cli.demo_serving import clear_earlier_service, serve_and_roll
from deepdock.cli.output import api_errors, client, console, stream_logs, wait_job
from deepdock.client import Client, ServerUnreachableError
from deepdock.settings import get_settings
from deepdock.specs.env import EnvSpec
from deepdock.specs.job import JobSpec, load_job_spec

ACCURACY_RE = re.compile(rb"test_accuracy=([0-9.]+)")
MODEL_NAME = "digits-mlp"


def demo(
    keep_server: bool = typer.Option(False, help="leave the embedded server running (foreground) afterwards"),
) -> None:
    """The end-to-end demo: environment → tracked training job → registered model → TorchScript/ONNX → production
    → a served, load-balanced service → a rolling update and a rollback."""
    settings = get_settings()
    embedded = None
    with api_errors():
        try:
            with client() as c:
                c.me()
            console.print(f"using the deepdock server at {settings.url}")
        except ServerUnreachableError:
            # Imported here: only the demo without a running server embeds one (a public entry point).
            from deepdock.server.run import BackgroundServer

            console.print(f"starting an embedded deepdock server at {settings.url} (state in {settings.home})")
            embedded = BackgroundServer(settings)
            embedded.start()
    try:
        with api_errors():
            demo_dir = Path(str(resources.files("deepdock.demo")))
            spec = load_job_spec(demo_dir / "job.yaml")
            _prebuild(spec)
            with client() as c:
                clear_earlier_service(c)
                job = c.run(spec)
                console.print(f"submitted job [bold]{job.id}[/bold]; following its logs")
                status = stream_logs(c, job.id)
                detail = c.job(job.id)
                log = b"".join(c.logs(job.id))
                match = ACCURACY_RE.search(log)
                console.print(f"job {detail.id} {status}: {detail.status_reason}")
                if status != JobStatus.SUCCEEDED or not match:
                    raise typer.Exit(1)
                console.print(f"[bold green]test accuracy: {float(match.group(1)):.4f}[/bold green]")
                _tracked(c, job.id)
                _lifecycle(c, job.id)
                serve_and_roll(c, MODEL_NAME, job.id, spec)
    finally:
        if embedded is not None and not keep_server:
            embedded.stop()
    if embedded is not None and keep_server:
        embedded.thread.join()


def _tracked(c: Client, job_id: str) -> None:
    """What the job logged while it ran: its params, its final metrics and its loss curve."""
    params = c.params(job_id).params
    console.print("params: " + ", ".join(f"{k}={v}" for k, v in params.items()), highlight=False)
    for s in c.metrics(job_id).series:
        console.print(f"metric {s.name}: {s.value:.4f} at step {s.step} ({s.count} points)", highlight=False)
    curve = c.series(job_id, "loss", max_points=8)
    console.print("loss curve (LTTB, 8 of {}): {}".format(
        curve.total, "  ".join(f"{st}:{v:.3f}" for st, v in zip(curve.steps, curve.values, strict=True))), highlight=False)
    files = [a.path for a in c.artifacts(job_id)]
    console.print(f"artifacts: {', '.join(files)}", highlight=False)


def _lifecycle(c: Client, job_id: str) -> None:
    """The registered version → TorchScript and ONNX with parity → ``production`` → its lineage."""
    from deepdock.cli.model import print_version

    versions = [v for v in c.model(MODEL_NAME).versions if v.job == job_id]
    if not versions:
        console.print(f"[red]the job registered no {MODEL_NAME} version[/red]")
        raise typer.Exit(1)
    ref = f"{MODEL_NAME}:{versions[-1].version}"
    console.print(f"registered [bold]{ref}[/bold]")
    for fmt in ("torchscript", "onnx"):
        export = c.export_model(ref, fmt)
        console.print(f"exporting {ref} to {fmt} (job {export.job}) in the training image, with a parity check")
        status = wait_job(c, export.job)
        if status != JobStatus.SUCCEEDED:
            console.print(f"[red]export to {fmt} {status}[/red]: {c.job(export.job).status_reason}")
            console.print(b"".join(c.logs(export.job)).decode(errors="replace"), highlight=False)
            raise typer.Exit(1)
    event = c.set_alias(MODEL_NAME, "production", versions[-1].version)
    console.print(f"{MODEL_NAME}@production: {event.from_version or '-'} → {event.to_version}")
    print_version(c.model_version(f"{MODEL_NAME}@production"))


def _prebuild(spec: JobSpec) -> None:
    """Build the environment here first, with progress, so the job starts on a warm cache."""
    from deepdock.envs import build_env  # the Docker SDK and the env builder load only for the demo

    if not isinstance(spec.environment, EnvSpec):  # load_job_spec inlined it; an image needs no build
        return
    console.print("building the demo environment (PyTorch 2.13 CPU + scikit-learn); cached after the first run")
    result = build_env(spec.environment, offline=True, progress=lambda msg: console.print(f"  {msg}", highlight=False))
    console.print(f"environment image: {result.tag} ({'cached' if result.cached else f'built in {result.duration_s:.0f}s'})")


def register(app: typer.Typer) -> None:
    app.command()(demo)
