"""The serving end of `deepdock demo`: the registered version served by 2 replicas behind the gateway,
judged on the held-out digits through the endpoint, then a second version rolled out and rolled back."""

from __future__ import annotations

import time

import httpx
import orjson
import typer

from deepdock.api.enums import TERMINAL_JOB_STATUSES, JobStatus
from deepdock.cli.output import console, wait_job
from deepdock.cli.service import wait_ready
from deepdock.client import Client
from deepdock.errors import NotFoundError
from deepdock.specs.job import JobSpec
from deepdock.specs.service import ServiceSpec

SERVICE = "digits"
# The first deployment may build the ONNX serving image's runtime layer (a minute or two, once).
READY_TIMEOUT_S = 900.0
ROLLOUT_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0


def clear_earlier_service(c: Client) -> None:
    """An earlier demo's service holds CPUs the training job needs: it goes first (its jobs stay as history)."""
    try:
        replicas = [r.job for r in c.service(SERVICE).replicas]
    except NotFoundError:
        return
    console.print(f"removing service {SERVICE} left by an earlier demo")
    c.delete_service(SERVICE)
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
    while any(c.job(job).status not in TERMINAL_JOB_STATUSES for job in replicas):
        if time.monotonic() > deadline:
            console.print(f"[red]the replicas of {SERVICE} did not stop within {ROLLOUT_TIMEOUT_S:g}s[/red]")
            raise typer.Exit(1)
        time.sleep(0.5)


def serve_and_roll(c: Client, model: str, job_id: str, spec: JobSpec) -> None:
    heldout = orjson.loads(b"".join(c.artifact(job_id, "heldout.json")))
    service = ServiceSpec.model_validate({
        "name": SERVICE, "model": f"{model}@production", "runtime": "onnx", "replicas": 2,
        "resources": {"cpus": 0.5, "memory": "512m"}})
    console.print(f"serving {service.model} as service [bold]{SERVICE}[/bold]: 2 replicas, ONNX runtime")
    started = time.monotonic()
    first = c.apply_service(service)
    s = wait_ready(c, SERVICE, READY_TIMEOUT_S, revision=first.target_revision)
    console.print(f"ready in {time.monotonic() - started:.1f}s on nodes "
                  f"{', '.join(sorted({r.node or '?' for r in s.replicas}))}; endpoint {s.endpoint}", highlight=False)
    serving = s.stable_revision
    _judge(c, s.endpoint, model, heldout, f"revision {serving}")

    console.print("training a second version (another seed, fewer epochs) to roll out")
    second = _train_second(c, model, spec)
    update = c.update_service(SERVICE, model=f"{model}:{second}")
    console.print(f"rolling update to {model}:{second} (revision {update.target_revision}): new replicas take traffic "
                  "once ready, the old ones drain")
    s = wait_ready(c, SERVICE, ROLLOUT_TIMEOUT_S, revision=update.target_revision)
    _judge(c, s.endpoint, model, heldout, f"revision {s.stable_revision}")
    back = c.rollback_service(SERVICE)
    console.print(f"service rollback: back to revision {back.target_revision}")
    s = wait_ready(c, SERVICE, ROLLOUT_TIMEOUT_S, revision=back.target_revision)
    _judge(c, s.endpoint, model, heldout, f"revision {s.stable_revision}")
    for e in s.events:
        console.print(f"  {e.kind:<12} {e.message}", highlight=False)
    console.print(f"the service stays up: `deepdock service describe {SERVICE}`, `deepdock predict {SERVICE} "
                  f"--input x.npy`, `deepdock service rm {SERVICE}`")


def _judge(c: Client, endpoint: str, model: str, heldout: dict[str, list], what: str) -> None:  # type: ignore[type-arg]
    """One request per held-out digit through the endpoint; the accuracy of the answers."""
    url = f"{endpoint.rstrip('/')}/v2/models/{model}/infer"
    correct, latencies = 0, []
    with httpx.Client(headers={"Authorization": f"Bearer {c.token}"}, timeout=REQUEST_TIMEOUT_S) as http:
        for row, label in zip(heldout["x"], heldout["y"], strict=True):
            body = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
            sent = time.perf_counter()
            try:
                answer = http.post(url, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                console.print(f"[red]the endpoint {url} did not answer: {exc}[/red] (is HAProxy installed? "
                              "the server log says whether the gateway started)")
                raise typer.Exit(1) from None
            latencies.append(time.perf_counter() - sent)
            if answer.status_code != 200:
                console.print(f"[red]{url}: {answer.status_code} {answer.text[:300]}[/red]")
                raise typer.Exit(1)
            logits = answer.json()["outputs"][0]["data"]
            correct += max(range(len(logits)), key=logits.__getitem__) == label
    latencies.sort()
    console.print(f"[bold green]{what}: accuracy {correct / len(latencies):.4f} on {len(latencies)} held-out digits "
                  f"through the endpoint[/bold green] (p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, "
                  f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms a request)")


def _train_second(c: Client, model: str, spec: JobSpec) -> int:
    # One CPU: the service's two replicas hold half a CPU each, and the demo fits a 2-CPU machine.
    second = spec.model_copy(update={
        "name": f"{spec.name}-seed1", "env": {**spec.env, "SEED": "1", "EPOCHS": "20", "DEEPDOCK_CPUS": "1"},
        "resources": spec.resources.model_copy(update={"cpus": 1.0})})
    job = c.run(second)
    status = wait_job(c, job.id)
    if status != JobStatus.SUCCEEDED:
        console.print(f"[red]job {job.id} {status}: {c.job(job.id).status_reason}[/red]")
        raise typer.Exit(1)
    versions = [v for v in c.model(model).versions if v.job == job.id]
    if not versions:
        console.print(f"[red]job {job.id} registered no {model} version[/red]")
        raise typer.Exit(1)
    ref = f"{model}:{versions[-1].version}"
    export = c.export_model(ref, "onnx")
    if wait_job(c, export.job) != JobStatus.SUCCEEDED:
        console.print(f"[red]export of {ref} to onnx failed: {c.job(export.job).status_reason}[/red]")
        raise typer.Exit(1)
    console.print(f"registered and exported {ref} (job {job.id})")
    return versions[-1].version
