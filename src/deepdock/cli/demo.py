"""`deepdock demo`: build a PyTorch CPU environment, train on the digits data in a limited container."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import typer

from deepdock.api.enums import JobStatus
from deepdock.cli.output import api_errors, client, console, stream_logs
from deepdock.client import ServerUnreachableError
from deepdock.settings import get_settings
from deepdock.specs.env import EnvSpec
from deepdock.specs.job import JobSpec, load_job_spec

ACCURACY_RE = re.compile(rb"test_accuracy=([0-9.]+)")


def demo(
    keep_server: bool = typer.Option(False, help="leave the embedded server running (foreground) afterwards"),
) -> None:
    """The end-to-end demo: environment → job on a node → logs → accuracy and artifacts."""
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
                job = c.run(spec)
                console.print(f"submitted job [bold]{job.id}[/bold]; following its logs")
                status = stream_logs(c, job.id)
                detail = c.job(job.id)
                log = b"".join(c.logs(job.id))
    finally:
        if embedded is not None and not keep_server:
            embedded.stop()
    match = ACCURACY_RE.search(log)
    console.print(f"job {detail.id} {status}: {detail.status_reason}")
    artifacts = Path(detail.artifacts_dir)
    metrics = next(iter(sorted(artifacts.glob("attempt-*/rank-0/metrics.json"))), None)
    if match:
        console.print(f"[bold green]test accuracy: {float(match.group(1)):.4f}[/bold green]")
    if metrics is not None:
        console.print(f"artifacts: {metrics.parent} ({', '.join(sorted(p.name for p in metrics.parent.iterdir()))})")
        console.print(f"metrics: {json.loads(metrics.read_text())}")
    if status != JobStatus.SUCCEEDED or not match:
        raise typer.Exit(1)
    if embedded is not None and keep_server:
        embedded.thread.join()


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
