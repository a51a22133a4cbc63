"""A server wired to in-memory engines, on SQLite and (when available) a real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from deepdock.api.enums import JobStatus, NodeHealth
from deepdock.compute.base import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED, LABEL_NODE, ContainerSpec, GpuInfo, NodeCapacity
from deepdock.compute.pool import KIND_FAKE, NodeConnection
from deepdock.compute.testing.fake import FakeBackend, FakeClock
from deepdock.server.app import create_app
from deepdock.server.background import observe
from deepdock.server.background.controller import Controller
from deepdock.server.background.observe import Observation
from deepdock.server.background.schedule import container_name
from deepdock.server.background.tasks import InlineTasks, Tasks, Work
from deepdock.server.context import AppContext, new_context
from deepdock.server.db.models import Attempt, Job, JobEvent, Node
from deepdock.server.db.session import Database
from deepdock.server.services.nodes import allocations
from deepdock.settings import Settings
from tests.server.factories import make_attempt, make_job, make_node


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

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.engines: dict[str, FakeBackend] = {}
        self.clock = clock

    def add(self, name: str, cpus: float = 8, memory_gib: int = 32, gpus: int = 0, *, gpu_memory_gib: int = 80,
            gpu_model: str = "A100", images: Iterable[str] = ("busybox:latest",), **fake: Any) -> FakeBackend:
        """``fake``: more FakeBackend arguments (builds_environments, frozen_timeout_s)."""
        capacity = NodeCapacity(
            cpus=cpus, memory=memory_gib * 1024**3,
            gpus=[GpuInfo(index=i, uuid=f"GPU-{name}-{i}", model=gpu_model, memory=gpu_memory_gib * 1024**3)
                  for i in range(gpus)],
            engine_version="fake", os="linux", arch="x86_64",
        )
        self.engines[name] = FakeBackend(capacity=capacity, images=set(images), clock=self.clock,
                                         engine_url=f"fake://{name}", **fake)
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
                            node_health_interval_s=0.2, stop_grace_s=1, retry_backoff_s=0.1,
                            retry_backoff_max_s=0.4, **overrides)
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


# -- state steps called once, without threads or sleeps ---------------------------------------------------


class CheckedInlineTasks(InlineTasks):
    """Inline engine tasks that keep what a task raised. In production a failed task is logged and the step
    retries next tick; here the ``steps`` fixture fails the test at teardown unless it took the failures
    with ``take_failures`` (a test that expects one)."""

    def __init__(self) -> None:
        super().__init__(name="engine")
        self.failures: list[tuple[str, BaseException]] = []

    def _run(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - recorded, reported at teardown
            self.failures.append((key, exc))
            return None
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def take_failures(self) -> list[tuple[str, BaseException]]:
        failures, self.failures = self.failures, []
        return failures


class RecordingTasks(Tasks):
    """Log followers recorded, never run: a follower of a running fake container would block until it
    exits (so InlineTasks cannot hold them). Nothing stays in flight, so collect captures the whole log."""

    def __init__(self) -> None:
        super().__init__(name="logs")
        self.submitted: list[tuple[str, tuple[Any, ...]]] = []

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, lane: str = "") -> Future[Any] | None:
        self.submitted.append((key, args))
        future: Future[Any] = Future()
        future.set_result(None)
        return future


@dataclass
class Steps:
    """A migrated database, fake engines on one FakeClock, an AppContext and a Controller on them, and the
    work sets the steps submit to (inline engine tasks, recorded followers)."""

    db: Database
    ctx: AppContext
    clock: FakeClock
    cluster: FakeCluster
    work: Work
    controller: Controller

    @property
    def engine_tasks(self) -> CheckedInlineTasks:
        return self.work.engine  # type: ignore[return-value]

    @property
    def followers(self) -> RecordingTasks:
        return self.work.followers  # type: ignore[return-value]

    def session(self) -> AbstractContextManager[Session]:
        return self.db.session()

    def engine(self, name: str) -> FakeBackend:
        return self.cluster.engines[name]

    def node(self, name: str, *, cpus: float = 8, memory_gib: int = 32, gpus: int = 0, gpu_memory_gib: int = 80,
             status: NodeHealth = NodeHealth.READY, draining: bool = False, register: bool = True,
             **fake: Any) -> FakeBackend:
        """A fake engine and (``register``) its node row with the engine's capacity."""
        engine = self.cluster.add(name, cpus=cpus, memory_gib=memory_gib, gpus=gpus, gpu_memory_gib=gpu_memory_gib,
                                  **fake)
        if register:
            capacity = engine.capacity()
            with self.db.session() as session:
                make_node(session, name, cpus=capacity.cpus, memory=capacity.memory,
                          gpus=[asdict(g) for g in capacity.gpus], status=status, draining=draining,
                          last_seen_at=self.clock())
        return engine

    def container(self, node: str, job_id: str, attempt: int, rank: int = 0, image: str = "busybox:latest") -> str:
        """A running container in ``node``'s fake engine named and labelled as the start step makes it."""
        return self.engine(node).run(ContainerSpec(
            name=container_name(job_id, attempt, rank), image=image, command=["sleep", "100"], env={},
            labels={LABEL_MANAGED: "true", LABEL_JOB: job_id, LABEL_ATTEMPT: str(attempt), LABEL_NODE: node},
            cpus=1, memory=1024**3, pids_limit=4096, shm_size=64 * 1024**2,
        ))

    def running_job(self, nodes: list[str] | None = None, *, stop_requested: str | None = None,
                    gpu_indices: list[list[int]] | None = None, **spec: Any) -> tuple[str, int, list[str]]:
        """A RUNNING job whose attempt has one running container per entry of ``nodes`` (a gang when
        several, each rank on ``gpu_indices[rank]``), recorded now. Returns (job id, attempt id, container ids)."""
        nodes = nodes or ["a"]
        spec.setdefault("replicas", len(nodes))
        with self.db.session() as session:
            job = make_job(session, status=JobStatus.RUNNING, started_at=self.clock(), stop_requested=stop_requested,
                           **spec)
            ids: list[str | None] = [self.container(n, job.id, 1, rank) for rank, n in enumerate(nodes)]
            attempt = make_attempt(session, job, nodes, container_ids=ids, gpu_indices=gpu_indices)
            return job.id, attempt.id, [i for i in ids if i]

    def queued_job(self, **spec: Any) -> str:
        with self.db.session() as session:
            return make_job(session, **spec).id

    # -- reads, each in a fresh session (rows come back detached, relationships loaded) --
    def job(self, job_id: str) -> Job:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def attempt(self, attempt_id: int) -> Attempt:
        with self.db.session() as session:
            attempt = session.get(Attempt, attempt_id)
            assert attempt is not None
            return attempt

    def attempts(self, job_id: str) -> list[Attempt]:
        with self.db.session() as session:
            return list(session.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)))

    def node_row(self, name: str) -> Node:
        with self.db.session() as session:
            node = session.scalar(select(Node).where(Node.name == name))
            assert node is not None
            return node

    def events(self, job_id: str) -> list[JobEvent]:
        with self.db.session() as session:
            return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))

    def allocations(self) -> dict[str, dict[str, object]]:
        with self.db.session() as session:
            return allocations(session)

    # -- the steps, once each --
    def observe(self) -> Observation:
        return observe.run(self.ctx, self.work)

    def reconcile(self) -> None:
        self.controller.reconcile_once()

    def schedule(self) -> int:
        return self.controller.schedule_once()


@pytest.fixture
def steps(tmp_path, db_url, monkeypatch) -> Iterator[Steps]:
    """Everything a module test of a state step needs, on SQLite and on PostgreSQL (``db_url``)."""
    from tests.server import factories

    clock = FakeClock()
    monkeypatch.setattr(factories, "clock", clock)
    cluster = FakeCluster(clock=clock)
    settings = Settings(home=tmp_path / "home", database_url=db_url, stop_grace_s=1)
    settings.home.mkdir(parents=True)
    ctx = new_context(settings, factories={KIND_FAKE: cluster.factory}, clock=clock)
    ctx.db.migrate()
    work = Work(engine=CheckedInlineTasks(), followers=RecordingTasks())
    fixture = Steps(db=ctx.db, ctx=ctx, clock=clock, cluster=cluster, work=work, controller=Controller(ctx, work))
    try:
        yield fixture
        failures = fixture.engine_tasks.take_failures()
        assert not failures, f"background tasks raised: {failures}"
    finally:
        work.close()
        ctx.pool.close()
        ctx.db.dispose()
