"""`deepdock server --workers N`: API workers in their own processes, background loops in the parent."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, job, wait_status

pytestmark = pytest.mark.docker

WORKERS = 3


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def multi_server(tmp_path, labelled_cleanup):
    # An idle period of an hour: a job only starts promptly if the worker's wake-up reached the parent.
    srv = ServerProcess(tmp_path / "home", labelled_cleanup, DEEPDOCK_WORKERS=str(WORKERS),
                        DEEPDOCK_SCHEDULER_IDLE_PERIOD_S="3600").start()
    yield srv
    srv.stop()


def test_workers_wake_the_scheduler_and_share_metrics(multi_server, busybox_image):
    with multi_server.client() as client:
        ids = [client.submit(job(busybox_image, f"echo job-{i}")).id for i in range(6)]
        for job_id in ids:
            d = wait_status(client, job_id, TERMINAL, timeout_s=60)
            assert d.status == "SUCCEEDED", d.status_reason
        for i, job_id in enumerate(ids):
            assert b"".join(client.logs(job_id)) == f"job-{i}\n".encode()
    # Requests were spread over the workers; a scrape of any one of them counts all of them.
    metrics = httpx.get(f"{multi_server.url}/metrics").text
    line = next(s for s in metrics.splitlines()
                if s.startswith('deepdock_http_request_seconds_count{method="POST",route="/jobs"}'))
    assert float(line.split()[-1]) == 6
    assert 'deepdock_jobs{status="SUCCEEDED"} 6.0' in metrics


def test_workers_die_with_a_killed_parent_and_the_port_is_free_again(multi_server, busybox_image):
    assert multi_server.proc is not None
    workers = [p for p in _children(multi_server.proc.pid) if _alive(p)]
    assert len(workers) >= WORKERS
    multi_server.kill()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "an orphaned API worker survived its parent"
    multi_server.start()  # same port: it would fail if an orphan still held the socket
    with multi_server.client() as client:
        j = client.submit(job(busybox_image, "true"))
        assert wait_status(client, j.id, TERMINAL).status == "SUCCEEDED"
