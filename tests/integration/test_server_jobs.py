"""Jobs through a real server on a real Docker engine: limits, OOM, logs, stop, restart re-adoption, and
two engines as two nodes. Every container the server creates carries the test's cleanup label."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from tests.integration.server_process import ServerProcess

from deepdock.api import JobDetail
from deepdock.errors import UnschedulableError
from deepdock.specs.job import JobSpec

pytestmark = pytest.mark.docker

SECOND_ENGINE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "second_engine.sh"
ENGINE2_PIDFILE = "/run/deepdock-engine2.pid"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def job(image: str, command: str, **extra) -> JobSpec:  # type: ignore[no-untyped-def]
    data = {"name": "it", "image": image, "command": ["sh", "-c", command],
            "resources": {"cpus": 0.5, "memory": "64m", "pids": 64}, **extra}
    return JobSpec.model_validate(data)


def wait_status(client, job_id: str, statuses: set[str], timeout_s: float = 60) -> JobDetail:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        d = client.job(job_id)
        if d.status in statuses:
            return d
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {d.status} after {timeout_s}s: {d.status_reason}")


@pytest.fixture
def server(tmp_path, labelled_cleanup):
    srv = ServerProcess(tmp_path / "home", labelled_cleanup).start()
    yield srv
    srv.stop()


def test_job_runs_in_a_limited_container_and_keeps_its_logs(server, docker_client, busybox_image):
    with server.client() as client:
        j = client.submit(job(busybox_image, "echo hello; sleep 2; echo bye"))
        wait_status(client, j.id, {"RUNNING"})
        (container,) = docker_client.containers.list(filters={"label": f"deepdock.job={j.id}"})
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == 500_000_000
        assert host["Memory"] == host["MemorySwap"] == 64 * 1024**2
        assert host["PidsLimit"] == 64
        assert "no-new-privileges" in host["SecurityOpt"][0] and host["CapDrop"] == ["ALL"]
        labels = container.labels
        assert labels["deepdock.attempt"] == "1" and labels["deepdock.node"] == "local"
        d = wait_status(client, j.id, TERMINAL)
        assert d.status == "SUCCEEDED"
        assert b"".join(client.logs(j.id)) == b"hello\nbye\n"
        # Logs outlive the container, which is gone once they are kept.
        assert docker_client.containers.list(all=True, filters={"label": f"deepdock.job={j.id}"}) == []


def test_memory_hog_is_reported_oomkilled(server, docker_client, busybox_image):
    with server.client() as client:
        j = client.submit(job(busybox_image, "awk 'BEGIN { s = \"x\"; while (1) s = s s }'",
                              resources={"cpus": 0.5, "memory": "32m"}))
        d = wait_status(client, j.id, TERMINAL)
        assert d.status == "FAILED"
        assert d.status_reason.startswith("oom_killed")
        assert d.attempt_list[0].replicas[0].oom_killed is True
        docker_client.ping()  # the host's engine is unaffected


def test_stop_and_follow_logs(server, busybox_image):
    with server.client() as client:
        j = client.submit(job(busybox_image, "trap 'echo got-term; exit 0' TERM; echo started; "
                                             "while true; do sleep 0.1; done"))
        wait_status(client, j.id, {"RUNNING"})
        time.sleep(0.5)
        client.stop(j.id)
        d = wait_status(client, j.id, TERMINAL, timeout_s=30)
        assert d.status == "STOPPED"
        assert b"".join(client.logs(j.id, follow=True)) == b"started\ngot-term\n"


def test_impossible_request_is_rejected_at_submit(server, busybox_image):
    with server.client() as client, pytest.raises(UnschedulableError, match="GPU"):
        client.submit(job(busybox_image, "true", resources={"gpus": 4}))


def test_server_killed_mid_job_readopts_and_records_real_exit(server, docker_client, busybox_image):
    with server.client() as client:
        long = client.submit(job(busybox_image, "sleep 4; echo survived"))
        short = client.submit(job(busybox_image, "sleep 1; exit 3"))
        wait_status(client, long.id, {"RUNNING"})
        wait_status(client, short.id, {"RUNNING"})
    server.kill()
    ids = {c.id for c in docker_client.containers.list(filters={"label": f"deepdock.job={long.id}"})}
    assert len(ids) == 1  # the job keeps running while the server is down
    time.sleep(2)  # the short job finishes while nobody watches
    server.start()
    with server.client() as client:
        d_short = wait_status(client, short.id, TERMINAL)
        assert d_short.status == "FAILED" and "exited with code 3" in d_short.status_reason
        d_long = wait_status(client, long.id, TERMINAL)
        assert d_long.status == "SUCCEEDED"
        assert d_long.attempts == 1  # adopted, never started twice
        assert b"".join(client.logs(long.id)) == b"survived\n"


def _engine2(action: str) -> None:
    subprocess.run(["bash", str(SECOND_ENGINE_SCRIPT), action], check=True, timeout=120, capture_output=True)


def _kill_engine2() -> None:
    """SIGKILL the second dockerd: the node vanishes as in a crash (a clean stop would first end its
    containers with SIGTERM, which is an ordinary exit, not a lost node)."""
    pid = int(Path(ENGINE2_PIDFILE).read_text().strip())
    subprocess.run(["kill", "-9", str(pid)], check=True)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_two_nodes_spread_and_node_loss_requeues(server, second_engine, busybox_image):
    with server.client() as client:
        client.add_node("engine2", second_engine)
        cpus = min(n.cpus for n in client.nodes())
        spec = job(busybox_image, "sleep 30", resources={"cpus": cpus, "memory": "64m"},
                   retry={"max_retries": 1, "on": ["node_lost"]})
        jobs = [client.submit(spec) for _ in range(2)]
        placed = {}
        for j in jobs:
            d = wait_status(client, j.id, {"RUNNING"})
            placed[j.id] = d.attempt_list[0].replicas[0].node
        assert sorted(placed.values()) == ["engine2", "local"]  # a full node each
        lost_id = next(k for k, v in placed.items() if v == "engine2")
        _kill_engine2()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                d = client.job(lost_id)
                if "node_lost" in d.status_reason:
                    break
                time.sleep(0.2)
            assert "node_lost" in d.status_reason, d
            assert d.status in ("QUEUED", "SCHEDULED", "STARTING", "RUNNING")
            assert {n.name: n.status for n in client.nodes()}["engine2"] == "unreachable"
            for j in jobs:
                client.stop(j.id)
        finally:
            _engine2("start")
