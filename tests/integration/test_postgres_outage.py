"""A real server on a real PostgreSQL that is stopped and started again: while it is down the API answers
503 with a JSON error (not a plain-text 500, not a reset connection) and `/healthz` says so; once it is
back the API, the loops and a new job work without a restart.

The test stops the cluster behind DEEPDOCK_TEST_POSTGRES_URL (scripts/start_postgres.sh's Debian cluster,
through ``pg_ctlcluster``) and always starts it again. The suite runs one test at a time, so no other
test sees the outage."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from tests.conftest import IN_CI
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, job, wait_status

from deepdock.config import read_config
from deepdock.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

# A refused connection fails at once; the engine's connect timeout (5 s) bounds anything slower.
ANSWER_WITHIN_S = 7.0
RECOVERY_TIMEOUT_S = 60.0


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


class Cluster:
    """The Debian cluster listening on the URL's port, stopped and started with ``pg_ctlcluster``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        port = str(parts.port or 5432)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or shutil.which("pg_lsclusters") is None:
            _missing(f"a local Debian PostgreSQL cluster behind {parts.hostname}:{port} that this test can stop")
        listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
        found = [line.split()[:2] for line in listing.splitlines() if line.split()[2:3] == [port]]
        if not found:
            _missing(f"a Debian PostgreSQL cluster on port {port} (pg_lsclusters)")
        self.version, self.name = found[0]
        self.sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.sudo, "pg_ctlcluster", self.version, self.name, *args], check=True,
                       capture_output=True, timeout=120)

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")  # fast: open sessions are terminated, as in a real outage

    def start(self) -> None:
        self._ctl("start")


@pytest.fixture
def database(postgres_url) -> Iterator[str]:
    name = f"dd_outage_{uuid.uuid4().hex[:10]}"
    # NullPool: a pooled connection would not survive the outage, and the drop comes after it.
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _timed_get(http: httpx.Client, path: str) -> httpx.Response:
    start = time.monotonic()
    r = http.get(path)  # a reset connection raises here and fails the test
    elapsed = time.monotonic() - start
    assert elapsed < ANSWER_WITHIN_S, f"GET {path} took {elapsed:.1f}s"
    return r


def _assert_database_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, f"{r.status_code} {r.headers.get('content-type')}: {r.text[:300]}"
    assert r.headers["content-type"] == "application/json" and r.headers["retry-after"] == "5"
    error = r.json()["error"]
    assert error["code"] == "database_unavailable", error
    assert error["message"].startswith("the database did not answer: "), error


def test_postgres_outage_is_503_json_and_recovery_needs_no_restart(tmp_path, postgres_url, database,
                                                                  labelled_cleanup, busybox_image):
    cluster = Cluster(postgres_url)
    server = ServerProcess(tmp_path / "home", labelled_cleanup, database_url=database).start()
    token = read_config(Settings(home=server.home))["token"]
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        assert http.get("/api/v1/jobs").status_code == 200
        assert http.get("/healthz").json()["database"] == "ok"
        cluster.stop()
        try:
            # Several rounds: the first meets the pool's connections that PostgreSQL terminated, the later
            # ones a refused connect; each is a JSON 503 within seconds.
            for _ in range(3):
                _assert_database_unavailable(_timed_get(http, "/api/v1/jobs"))
                _assert_database_unavailable(_timed_get(http, "/api/v1/nodes"))
                health = _timed_get(http, "/healthz")
                assert health.status_code == 503, health.text
                assert health.json()["status"] == "degraded" and health.json()["database"] not in ("", "ok")
                time.sleep(0.5)
            assert server.proc is not None and server.proc.poll() is None, "the server exited during the outage"
        finally:
            cluster.start()

        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while http.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the server did not see the database come back"
            time.sleep(0.2)
        assert http.get("/healthz").json()["database"] == "ok"
        assert http.get("/api/v1/jobs").status_code == 200
        with server.client() as client:
            j = client.submit(job(busybox_image, "echo back"))
            d = wait_status(client, j.id, TERMINAL, timeout_s=RECOVERY_TIMEOUT_S)
            assert d.status == "SUCCEEDED", d.status_reason
            assert b"".join(client.logs(j.id)) == b"back\n"
    finally:
        http.close()
        server.stop()
