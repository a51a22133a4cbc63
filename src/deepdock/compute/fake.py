"""An in-memory engine for fast logic tests of the server.

``FakeBackend`` obeys the same contract as ``DockerBackend`` (tests/compute runs one contract suite
against both), but nothing runs: a container stays ``running`` until a test ends it with ``finish`` or
the server stops it. Time comes from a controllable clock, so reconciler tests need no sleeps.

Test hooks (not part of ``ComputeBackend``): ``finish``, ``write_log``, ``ignore_sigterm``,
``set_unreachable``, ``add_image``/``remove_image``, ``set_capacity``, ``fail_next``, ``files``,
``set_stats``, and the ``clock`` attribute (a ``FakeClock`` by default, with ``advance``).
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from deepdock.compute.base import (
    EXIT_CODE_SIGKILL,
    EXIT_CODE_SIGTERM,
    STATUS_EXITED,
    STATUS_RUNNING,
    ComputeBackend,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    GpuInfo,
    NodeCapacity,
    StatsSource,
)
from deepdock.compute.logfmt import format_timestamp_prefix
from deepdock.errors import (
    ConflictError,
    EngineError,
    EngineUnreachableError,
    ImageMissingError,
    NotFoundError,
    SpecError,
)

# Docker's own limits, mirrored so that a spec the fake accepts is one a real engine accepts too.
MIN_MEMORY_BYTES = 6 * 1024**2
CONTAINER_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Start of the fake clock: a fixed, realistic epoch time so log timestamps look like real ones.
FAKE_EPOCH_START_S = 1_700_000_000.0
# How long a following ``logs`` iterator waits between checks for new output (real seconds).
FOLLOW_POLL_S = 0.05

DEFAULT_FAKE_CAPACITY = NodeCapacity(
    cpus=8.0,
    memory=32 * 1024**3,
    gpus=[],
    engine_version="fake-1.0",
    os="linux",
    arch="x86_64",
    labels={},
)


class FakeClock:
    """A clock that only moves when told to. Call it to read the time (epoch seconds)."""

    def __init__(self, start: float = FAKE_EPOCH_START_S) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class _Container:
    id: str
    spec: ContainerSpec
    created_at: float
    started_at: float
    status: str = STATUS_RUNNING
    exit_code: int | None = None
    oom_killed: bool = False
    finished_at: float | None = None
    error: str = ""
    ignores_sigterm: bool = False
    logs: list[tuple[float, bytes]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    stats: ContainerStats | None = None

    def state(self) -> ContainerState:
        return ContainerState(
            id=self.id,
            name=self.spec.name,
            status=self.status,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            started_at=self.started_at,
            finished_at=self.finished_at,
            labels=dict(self.spec.labels),
            error=self.error,
            image=self.spec.image,
            created_at=self.created_at,
        )


class FakeBackend(ComputeBackend, StatsSource):
    def __init__(
        self,
        capacity: NodeCapacity | None = None,
        images: Iterable[str] = (),
        clock: Callable[[], float] | None = None,
        engine_url: str = "fake://engine",
    ) -> None:
        self.engine_url = engine_url
        self.clock: Callable[[], float] = clock if clock is not None else FakeClock()
        self._capacity = replace(capacity if capacity is not None else DEFAULT_FAKE_CAPACITY)
        self._images: set[str] = set(images)
        self._containers: dict[str, _Container] = {}
        self._unreachable = False
        self._failures: dict[str, list[Exception]] = {}
        self._closed = False
        # One lock for all state; the condition wakes followers of ``logs`` on new output or exit.
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ ComputeBackend

    def ping(self) -> None:
        with self._cond:
            self._check("ping")

    def capacity(self) -> NodeCapacity:
        with self._cond:
            self._check("capacity")
            return replace(self._capacity, gpus=list(self._capacity.gpus), labels=dict(self._capacity.labels))

    def run(self, spec: ContainerSpec) -> str:
        with self._cond:
            self._check("run")
            self._validate(spec)
            files = _extract(spec.code_archive) if spec.code_archive is not None else {}
            now = self.clock()
            container = _Container(
                id=uuid.uuid4().hex + uuid.uuid4().hex,
                spec=replace(spec, labels=dict(spec.labels), env=dict(spec.env)),
                created_at=now,
                started_at=now,
                files=files,
            )
            self._containers[container.id] = container
            return container.id

    def inspect(self, container_id: str) -> ContainerState:
        with self._cond:
            self._check("inspect")
            return self._get(container_id).state()

    def list_containers(self, labels: dict[str, str]) -> list[ContainerState]:
        with self._cond:
            self._check("list_containers")
            found = [c for c in self._containers.values() if all(c.spec.labels.get(k) == v for k, v in labels.items())]
            return [c.state() for c in sorted(found, key=lambda c: c.created_at)]

    def logs(
        self,
        container_id: str,
        since: float | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        # Checks happen now, not at the first ``next``, so a missing container fails at the call.
        with self._cond:
            self._check("logs")
            container = self._get(container_id)
        return self._iter_logs(container, since, follow, timestamps)

    def stop(self, container_id: str, grace_s: float) -> None:
        with self._cond:
            self._check("stop")
            container = self._get(container_id)
            if container.status != STATUS_RUNNING:
                return
            if container.ignores_sigterm:
                # Killed once the grace period is over; the fake does not sleep, it dates the end.
                self._end(container, EXIT_CODE_SIGKILL, finished_at=self.clock() + grace_s)
            else:
                self._end(container, EXIT_CODE_SIGTERM)

    def remove(self, container_id: str) -> None:
        with self._cond:
            self._check("remove")
            container = self._find(container_id)
            if container is None:
                return
            if container.status == STATUS_RUNNING:
                self._end(container, EXIT_CODE_SIGKILL)
            del self._containers[container.id]
            self._cond.notify_all()

    def image_exists(self, ref: str) -> bool:
        with self._cond:
            self._check("image_exists")
            return ref in self._images

    def close(self) -> None:
        with self._cond:
            self._closed = True

    # ------------------------------------------------------------------ StatsSource

    def stats(self, container_id: str) -> ContainerStats:
        with self._cond:
            self._check("stats")
            container = self._get(container_id)
            if container.stats is not None:
                return container.stats
            return ContainerStats(cpu_percent=0.0, memory_usage=0, memory_limit=container.spec.memory, pids=1)

    # ------------------------------------------------------------------ test hooks

    def finish(
        self,
        container_id: str,
        exit_code: int,
        oom: bool = False,
        error: str = "",
        status: str = STATUS_EXITED,
    ) -> None:
        """End a running container as if its process exited (``oom`` as if the kernel killed it)."""
        with self._cond:
            container = self._get(container_id)
            self._end(container, exit_code, oom=oom, error=error, status=status)

    def write_log(self, container_id: str, data: bytes | str) -> None:
        """Append output, stamped with the fake clock's current time."""
        with self._cond:
            container = self._get(container_id)
            chunk = data.encode() if isinstance(data, str) else data
            container.logs.append((self.clock(), chunk))
            self._cond.notify_all()

    def ignore_sigterm(self, container_id: str, ignore: bool = True) -> None:
        """Make ``stop`` need the SIGKILL after the grace period (exit code 137)."""
        with self._cond:
            self._get(container_id).ignores_sigterm = ignore

    def set_unreachable(self, unreachable: bool = True) -> None:
        with self._cond:
            self._unreachable = unreachable

    def add_image(self, ref: str) -> None:
        with self._cond:
            self._images.add(ref)

    def remove_image(self, ref: str) -> None:
        with self._cond:
            self._images.discard(ref)

    def set_capacity(self, capacity: NodeCapacity) -> None:
        with self._cond:
            self._capacity = replace(capacity)

    def set_gpus(self, gpus: list[GpuInfo]) -> None:
        with self._cond:
            self._capacity = replace(self._capacity, gpus=list(gpus))

    def set_stats(self, container_id: str, stats: ContainerStats) -> None:
        with self._cond:
            self._get(container_id).stats = stats

    def fail_next(self, method: str, error: Exception) -> None:
        """Make the next call of ``method`` (e.g. "run", "inspect") raise ``error`` once."""
        with self._cond:
            self._failures.setdefault(method, []).append(error)

    def files(self, container_id: str) -> dict[str, bytes]:
        """The code archive's regular files as extracted into the workdir: path -> content."""
        with self._cond:
            container = self._get(container_id)
            return {f"{container.spec.workdir.rstrip('/')}/{name}": data for name, data in container.files.items()}

    def spec_of(self, container_id: str) -> ContainerSpec:
        """The spec a container was created from (what the server asked for)."""
        with self._cond:
            return self._get(container_id).spec

    # ------------------------------------------------------------------ internals

    def _check(self, method: str) -> None:
        if self._closed:
            raise EngineError(f"backend for {self.engine_url} is closed")
        if self._unreachable:
            raise EngineUnreachableError(
                f"container engine {self.engine_url} is unreachable", details={"engine": self.engine_url}
            )
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _find(self, ref: str) -> _Container | None:
        if ref in self._containers:
            return self._containers[ref]
        for c in self._containers.values():
            if c.spec.name == ref.lstrip("/"):
                return c
        return None

    def _get(self, ref: str) -> _Container:
        container = self._find(ref)
        if container is None:
            raise NotFoundError(f"container {ref} not found on {self.engine_url}")
        return container

    def _validate(self, spec: ContainerSpec) -> None:
        if not CONTAINER_NAME_RE.match(spec.name):
            raise EngineError(f"invalid container name {spec.name!r}")
        if self._find(spec.name) is not None:
            raise ConflictError(f"container name {spec.name!r} is already in use on {self.engine_url}")
        if spec.image not in self._images:
            raise ImageMissingError(f"image {spec.image} is not present on {self.engine_url}", details={"image": spec.image})
        if spec.memory < MIN_MEMORY_BYTES:
            raise EngineError("Minimum memory limit allowed is 6MB")
        if not 0 < spec.cpus <= self._capacity.cpus:
            raise EngineError(f"Range of CPUs is from 0.01 to {self._capacity.cpus:.2f}")
        known = {g.index for g in self._capacity.gpus}
        missing = [i for i in spec.gpu_indices if i not in known]
        if missing:
            raise EngineError(f"GPU indices {missing} do not exist on {self.engine_url}")

    def _end(
        self,
        container: _Container,
        exit_code: int,
        *,
        oom: bool = False,
        error: str = "",
        status: str = STATUS_EXITED,
        finished_at: float | None = None,
    ) -> None:
        if container.status != STATUS_RUNNING:
            raise ConflictError(f"container {container.id} is not running")
        container.status = status
        container.exit_code = exit_code
        container.oom_killed = oom
        container.error = error
        container.finished_at = self.clock() if finished_at is None else finished_at
        self._cond.notify_all()

    def _iter_logs(self, container: _Container, since: float | None, follow: bool, timestamps: bool) -> Iterator[bytes]:
        position = 0
        while True:
            with self._cond:
                chunks = container.logs[position:]
                position = len(container.logs)
                done = not follow or container.status != STATUS_RUNNING or container.id not in self._containers
                if not chunks and not done:
                    self._cond.wait(FOLLOW_POLL_S)
                    continue
            for ts, chunk in chunks:
                if since is not None and ts < since:
                    continue
                yield format_timestamp_prefix(ts, chunk) if timestamps else chunk
            if done:
                return


def _extract(archive: bytes) -> dict[str, bytes]:
    """Read a tar or tar.gz the way ``put_archive`` would; a corrupt one is the engine's error."""
    data = gzip.decompress(archive) if archive[:2] == b"\x1f\x8b" else archive
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            files: dict[str, bytes] = {}
            for member in tar.getmembers():
                if member.isfile():
                    extracted = tar.extractfile(member)
                    files[member.name.removeprefix("./")] = extracted.read() if extracted else b""
            return files
    except tarfile.TarError as exc:
        raise SpecError(f"code archive is not a valid tar or tar.gz: {exc}") from exc
