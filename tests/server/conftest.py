"""A server wired to in-memory engines, on SQLite and (when available) a real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from deepdock.compute.base import GpuInfo, NodeCapacity
from deepdock.compute.pool import KIND_FAKE, NodeConnection
from deepdock.compute.testing.fake import FakeBackend
from deepdock.server.app import create_app
from deepdock.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'deepdock.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    name = f"dd_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class FakeCluster:
    """Named in-memory engines; ``fake://NAME`` in a node's engine URL selects one."""

    def __init__(self) -> None:
        self.engines: dict[str, FakeBackend] = {}

    def add(self, name: str, cpus: float = 8, memory_gib: int = 32, gpus: int = 0) -> FakeBackend:
        capacity = NodeCapacity(
            cpus=cpus, memory=memory_gib * 1024**3,
            gpus=[GpuInfo(index=i, uuid=f"GPU-{name}-{i}", model="A100", memory=80 * 1024**3) for i in range(gpus)],
            engine_version="fake", os="linux", arch="x86_64",
        )
        self.engines[name] = FakeBackend(capacity=capacity, images={"busybox:latest"}, clock=time.time)
        return self.engines[name]

    def factory(self, conn: NodeConnection) -> FakeBackend:
        return self.engines[conn.engine_url.removeprefix("fake://")]


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def make_server(tmp_path, db_url, cluster) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:  # type: ignore[no-untyped-def]
        settings = Settings(home=tmp_path / "home", database_url=db_url, reconcile_interval_s=0.05,
                            node_health_interval_s=0.2, stop_grace_s=1, **overrides)
        app = create_app(settings, factories={KIND_FAKE: cluster.factory}, register_local_node=False)
        client = TestClient(app)
        client.__enter__()
        token = app.state.bootstrap_token
        if token is None:
            from deepdock.config import read_config

            token = read_config(settings)["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
