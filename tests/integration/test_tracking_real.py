"""Tracking against a real server process and a real Docker engine, in the offline python base image:
the SDK arrives in the container without a rebuild; metrics survive a SIGKILL of the server while the
job keeps logging, neither lost nor doubled; a preempted job saves, is queued as PREEMPTED, and resumes
from its checkpoint to the same result as an uninterrupted run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, wait_status

from deepdock.specs.job import JobSpec

pytestmark = pytest.mark.docker

LOGGER = """
import os, time
from deepdock import sdk
steps = int(os.environ["STEPS"])
sdk.log_params(steps=steps, kind="logger")
for step in range(steps):
    sdk.log_metrics(step, loss=1.0 / (step + 1), seen=float(step))
    if step % 500 == 0:
        time.sleep(0.05)
print("logged", steps, flush=True)
"""

# Counts to TOTAL in epochs, checkpointing each epoch and on SIGTERM; the result only depends on the count.
COUNTER = """
import os, time
from deepdock import sdk
TOTAL, PAUSE = int(os.environ["TOTAL"]), float(os.environ["PAUSE"])
state = sdk.load_checkpoint() or {"epoch": 0, "acc": 0}
print("start at epoch", state["epoch"], "resumed from", os.environ.get("DEEPDOCK_RESUMED_FROM", "-"), flush=True)
for epoch in range(state["epoch"], TOTAL):
    state = {"epoch": epoch + 1, "acc": state["acc"] * 31 % 1000003 + epoch}
    sdk.log_metrics(epoch, acc=float(state["acc"]))
    sdk.save_checkpoint(state, step=epoch + 1)
    if sdk.should_stop():
        print("stopping at epoch", epoch + 1, flush=True)
        raise SystemExit(0)
    time.sleep(PAUSE)
print("result", state["acc"], flush=True)
"""


@pytest.fixture
def server(tmp_path, labelled_cleanup):
    srv = ServerProcess(tmp_path / "home", labelled_cleanup, DEEPDOCK_TRACKING_INTERVAL_S="0.2").start()
    yield srv
    srv.stop()


def code_dir(tmp_path: Path, name: str, source: str) -> Path:
    folder = tmp_path / f"code-{name}"
    folder.mkdir()
    (folder / "main.py").write_text(source)
    return folder


def spec(image: str, code: Path, env: dict[str, str], **extra) -> JobSpec:  # type: ignore[no-untyped-def]
    return JobSpec.model_validate({"name": code.name, "image": image, "command": ["python", "main.py"], "code": str(code),
                                   "env": env, "resources": {"cpus": 0.5, "memory": "256m"}, **extra})


def test_metrics_survive_a_server_sigkill_neither_lost_nor_doubled(server, tmp_path, python_image):
    steps = 20_000
    with server.client() as client:
        job = client.run(spec(python_image, code_dir(tmp_path, "logger", LOGGER), {"STEPS": str(steps)}))
        wait_status(client, job.id, {"RUNNING"})
        # some points are in before the kill
        deadline = time.monotonic() + 60
        while not client.metrics(job.id).series and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.metrics(job.id).series, "no metric arrived while the job ran"
    server.kill()
    time.sleep(1.0)  # the job keeps logging while nobody reads
    server.start()
    with server.client() as client:
        done = wait_status(client, job.id, TERMINAL, timeout_s=120)
        assert done.status == "SUCCEEDED", done.status_reason
        for name in ("loss", "seen"):
            series = client.series(job.id, name)
            assert series.total == steps and series.steps == list(range(steps)), name
        assert client.series(job.id, "seen").values == [float(s) for s in range(steps)]
        assert client.params(job.id).params == {"steps": steps, "kind": "logger"}
        assert b"".join(client.logs(job.id)) == f"logged {steps}\n".encode()  # the events are not the job's output


def test_a_preempted_job_saves_is_requeued_and_resumes_to_the_same_result(server, tmp_path, python_image, docker_client):
    total = 12
    uninterrupted = 0
    for epoch in range(total):
        uninterrupted = uninterrupted * 31 % 1000003 + epoch
    cpus = docker_client.info()["NCPU"]
    with server.client() as client:
        low = client.run(spec(python_image, code_dir(tmp_path, "counter", COUNTER), {"TOTAL": str(total), "PAUSE": "0.5"},
                              priority=0, resources={"cpus": cpus, "memory": "256m"}))
        wait_status(client, low.id, {"RUNNING"})
        deadline = time.monotonic() + 60
        while not [c for c in client.checkpoints(low.id) if c.status == "stored"] and time.monotonic() < deadline:
            time.sleep(0.1)
        high = client.run(spec(python_image, code_dir(tmp_path, "high", "print('urgent')\n"), {}, priority=100,
                               preemptible=False, resources={"cpus": cpus, "memory": "64m"}))
        assert wait_status(client, high.id, TERMINAL, timeout_s=120).status == "SUCCEEDED"
        done = wait_status(client, low.id, TERMINAL, timeout_s=180)
        assert done.status == "SUCCEEDED", done.status_reason
        attempts = [a.status for a in done.attempt_list]
        assert attempts[0] == "PREEMPTED" and attempts[-1] == "SUCCEEDED"
        first = b"".join(client.logs(low.id, attempt=1)).decode()
        last = b"".join(client.logs(low.id, attempt=len(attempts))).decode()
        assert "stopping at epoch" in first
        stopped_at = int(first.split("stopping at epoch")[1].split()[0])
        # resumed where the preempted attempt saved: no epoch lost, none done twice
        assert f"start at epoch {stopped_at} resumed from ckpt-{stopped_at:012d}" in last
        assert f"result {uninterrupted}" in last
        acc = client.series(low.id, "acc")
        assert sorted(set(acc.steps)) == list(range(total))


def test_a_versions_lineage_has_the_content_hash_of_the_data_it_read(server, tmp_path, python_image):
    script = ("import os\nfrom deepdock import sdk\nos.makedirs(os.environ['DEEPDOCK_ARTIFACTS_DIR'], exist_ok=True)\n"
              "open(os.path.join(os.environ['DEEPDOCK_ARTIFACTS_DIR'], 'model.bin'), 'wb').write(b'w')\n")
    with server.client() as client:
        job = client.run(spec(python_image, code_dir(tmp_path, "reader", script), {},
                              volumes=[{"source": "dataset", "target": "/data", "read_only": True}]))
        assert wait_status(client, job.id, TERMINAL, timeout_s=120).status == "SUCCEEDED"
        version = client.register_model("reader-model", job.id, "model.bin")
        (data,) = version.lineage["data"]
        assert data["target"] == "/data" and data["kind"] == "volume" and data["read_only"]
        assert len(data["sha256"]) == 64 and data["files"] == 0 and data["complete"]
