"""The whole second half of the lifecycle on a real server and a real Docker engine, in the demo's own
PyTorch image: `deepdock demo` trains with its loss curve tracked, registers the model, exports
TorchScript and ONNX with a parity check, points `production` at it and serves it (rolling a second
version out and back); a re-run gives bit-identical
weights; a preempted training resumes from its checkpoint to the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
from tests.integration.server_process import ServerProcess, free_port
from tests.integration.test_server_jobs import TERMINAL, wait_status

from deepdock.specs.job import JobSpec, load_job_spec

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SHA_RE = re.compile(rb"weights_sha256=([0-9a-f]{64})")
DEMO_TIMEOUT_S = 1800


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import TEST_LABEL

    labels = {TEST_LABEL: f"lifecycle-{os.getpid()}"}
    # A gateway: the demo ends by serving its model behind it.
    srv = ServerProcess(tmp_path_factory.mktemp("lifecycle") / "home", labels, DEEPDOCK_STOP_GRACE_S="20",
                        DEEPDOCK_GATEWAY_PORT=str(free_port())).start()
    yield srv
    srv.stop()
    import docker

    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={labels[TEST_LABEL]}"}):
        c.remove(force=True)
    client.close()


@pytest.fixture(scope="module")
def demo_run(server):
    """`deepdock demo` against the test server: the main job, end to end."""
    env = {**os.environ, "DEEPDOCK_SERVER_URL": server.url, "DEEPDOCK_HOME": str(server.home), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "deepdock.cli.main", "demo"], env=env, capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    with server.client() as client:
        # The demo leaves its service up; the trainings below need the CPUs its replicas hold.
        replicas = [r.job for r in client.service("digits").replicas]
        client.delete_service("digits")
        for job in replicas:
            wait_status(client, job, TERMINAL, timeout_s=120)
    return done.stdout


def demo_spec(**env: str) -> JobSpec:
    demo_dir = Path(str(resources.files("deepdock.demo")))
    spec = load_job_spec(demo_dir / "job.yaml")
    return spec.model_copy(update={"env": {**spec.env, **env}, "code": str(demo_dir)})


def test_demo_registers_exports_with_parity_and_promotes(server, demo_run):
    assert "registered digits-mlp:1" in demo_run
    assert "digits-mlp@production: - → 1" in demo_run
    with server.client() as client:
        version = client.model_version("digits-mlp@production")
        assert version.aliases == ["production"]
        assert set(version.formats) == {"torchscript", "onnx"}
        ts, onnx = version.formats["torchscript"]["report"], version.formats["onnx"]["report"]
        assert ts["ok"] and ts["max_abs_diff"] <= 1e-6 and ts["inputs_checked"] >= 1000
        assert onnx["ok"] and onnx["max_abs_diff"] <= 1e-5 and onnx["inputs_checked"] >= 1000
        assert {f.path for f in version.files} >= {"model.pt", "example_input.npy", ts["file"], onnx["file"]}
        assert version.signature["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]
        lineage = version.lineage
        assert lineage["image"].startswith("deepdock/env:") and lineage["image_digest"].startswith("sha256:")
        assert len(lineage["env_lock"]) == 64 and len(lineage["code_sha256"]) == 64
        job = client.job(version.job)
        assert version.params["lr"] == 0.003 and 0.9 < version.metrics["test_accuracy"] <= 1.0
        loss = client.series(job.id, "loss")
        assert loss.total == loss.steps[-1] and loss.values[-1] < loss.values[0]


def test_demo_serves_the_model_then_rolls_a_new_version_out_and_back(demo_run):
    judged = re.findall(r"revision (\d+): accuracy ([0-9.]+) on (\d+) held-out digits through the endpoint", demo_run)
    assert [rev for rev, _, _ in judged] == ["1", "2", "1"], demo_run[-3000:]
    assert all(float(acc) > 0.9 and int(n) == 450 for _, acc, n in judged), judged
    assert judged[0][1] == judged[2][1]  # the same model again after the rollback
    assert "rolling update to digits-mlp:2 (revision 2)" in demo_run
    assert "service rollback: back to revision 1" in demo_run


def test_rerun_gives_bit_identical_weights(server, demo_run):
    with server.client() as client:
        original = client.model_version("digits-mlp@production").job
        first = SHA_RE.search(b"".join(client.logs(original)))
        rerun = client.rerun(original)
        done = wait_status(client, rerun.id, TERMINAL, timeout_s=600)
        assert done.status == "SUCCEEDED", done.status_reason
        assert done.rerun_of == original and done.image == client.job(original).image
        again = SHA_RE.search(b"".join(client.logs(rerun.id)))
        assert first and again and first.group(1) == again.group(1)


def test_a_preempted_training_resumes_to_the_weights_of_an_uninterrupted_run(server, demo_run, docker_client):
    with server.client() as client:
        reference = SHA_RE.search(b"".join(client.logs(client.model_version("digits-mlp@production").job)))
        cpus = docker_client.info()["NCPU"]
        spec = demo_spec(EPOCH_PAUSE_S="0.3", MODEL_NAME="digits-resumed")
        spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpus": float(cpus)})})
        low = client.run(spec)
        wait_status(client, low.id, {"RUNNING"}, timeout_s=600)
        deadline = time.monotonic() + 300
        while not any(c.status == "stored" for c in client.checkpoints(low.id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(c.status == "stored" for c in client.checkpoints(low.id)), "no checkpoint stored"
        urgent = JobSpec.model_validate({"name": "urgent", "image": client.job(low.id).image, "command": ["true"],
                                         "priority": 100, "preemptible": False,
                                         "resources": {"cpus": float(cpus), "memory": "64m"}})
        high = client.submit(urgent)
        assert wait_status(client, high.id, TERMINAL, timeout_s=300).status == "SUCCEEDED"
        done = wait_status(client, low.id, TERMINAL, timeout_s=900)
        assert done.status == "SUCCEEDED", done.status_reason
        assert [a.status for a in done.attempt_list][0] == "PREEMPTED"
        first = b"".join(client.logs(low.id, attempt=1))
        last = b"".join(client.logs(low.id, attempt=done.attempts))
        assert b"asked to stop: saved epoch" in first and b"resumed from epoch" in last
        resumed = SHA_RE.search(last)
        assert reference and resumed and resumed.group(1) == reference.group(1)
        # the work lost is at most one checkpoint interval: nothing, since it saved on the signal
        saved = int(re.search(rb"saved epoch (\d+)", first).group(1))
        assert f"resumed from epoch {saved} ".encode() in last
