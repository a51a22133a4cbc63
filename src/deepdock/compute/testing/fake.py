"""An in-memory engine, with every ability, for fast logic tests of the server.

``FakeBackend`` obeys the same contracts as ``DockerBackend`` (the suites of ``testing.conformance`` run
against both), but nothing runs: a container stays ``running`` until a test ends it with ``finish`` or
the server stops it. Time comes from a controllable clock, so reconciler tests need no sleeps.

Abilities: ``StatsSource``, ``GpuTelemetry`` (what ``set_gpu_stats`` gave, or idle devices),
``ImageProvision`` (a build is instant and content-addressed; an export is a small JSON marker that
another fake's ``import_image`` understands), ``FileTransfer`` (the files of the code archive and of
``put_file``, as tars), ``Networking`` (networks and host ports in memory),
``VolumeStore`` (named volumes and their labels in memory; a volume a container names is in use).

Test hooks (not part of any interface): ``finish``, ``write_log``, ``ignore_sigterm``,
``set_unreachable``, ``set_frozen``, ``add_image``/``remove_image``, ``set_capacity``, ``set_gpus``,
``fail_next`` (by method name), ``files``, ``put_file``, ``spec_of``, ``set_stats``, ``set_gpu_stats``, the ``builds``
list, and the ``clock`` attribute (a ``FakeClock`` by default, with ``advance``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import re
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from deepdock.compute.abilities import (
    FileTransfer,
    GpuTelemetry,
    ImageProvision,
    Networking,
    Progress,
    StatsSource,
    VolumeInfo,
    VolumeStore,
)
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
    GpuStats,
    ImageDetails,
    NodeCapacity,
    check_ports,
)
from deepdock.compute.logfmt import format_timestamp_prefix
from deepdock.errors import (
    ConflictError,
    EngineError,
    EngineUnreachableError,
    ImageMissingError,
    NotFoundError,
    SpecError,
    UnsupportedError,
)
from deepdock.specs.env import EnvSpec

# Docker's own limits, mirrored so that a spec the fake accepts is one a real engine accepts too.
MIN_MEMORY_BYTES = 6 * 1024**2
CONTAINER_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Start of the fake clock: a fixed, realistic epoch time so log timestamps look like real ones.
FAKE_EPOCH_START_S = 1_700_000_000.0
# How long a following ``logs`` iterator waits between checks for new output (real seconds).
FOLLOW_POLL_S = 0.05
# How long a call blocks on a frozen engine before it times out (real seconds): short, tests wait it.
FROZEN_TIMEOUT_S = 0.2
# The repository of built environment tags, as ``deepdock.envs`` names them; the fake hashes the spec.
FAKE_ENV_REPO = "deepdock/env"
ENV_TAG_HEX_CHARS = 16
# First host port handed out for published ports (docker's ephemeral range starts here too).
FAKE_HOST_PORT_START = 32768
# Networks every engine has without creating them (``list_networks`` does not report them).
BUILTIN_NETWORKS = frozenset({"bridge", "host"})
# The key of the JSON marker an export consists of.
EXPORT_MARKER_KEY = "deepdock-fake-image"

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


def fake_env_tag(env: EnvSpec) -> str:
    """The deterministic tag ``FakeBackend.build_environment`` gives ``env``: same spec, same tag."""
    digest = hashlib.sha256(env.model_dump_json().encode()).hexdigest()
    return f"{FAKE_ENV_REPO}:{digest[:ENV_TAG_HEX_CHARS]}"


@dataclass(frozen=True)
class FakeBuild:
    """One ``build_environment`` call: ``cached`` when the tag was already present (a no-op)."""

    env: EnvSpec
    tag: str
    cached: bool


@dataclass
class _Network:
    id: str
    labels: dict[str, str]
    isolated: bool = False


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
    # The container's filesystem as far as the fake knows it: absolute paths.
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    stats: ContainerStats | None = None
    ports: dict[int, int] = field(default_factory=dict)

    def add_dir(self, path: str) -> None:
        while path not in self.dirs and path != "/":
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def add_file(self, path: str, data: bytes) -> None:
        self.add_dir(posixpath.dirname(path))
        self.files[path] = data

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
            # Like an engine: host ports are held only while the container runs.
            ports=dict(self.ports) if self.status == STATUS_RUNNING else {},
        )


class FakeBackend(ComputeBackend, StatsSource, GpuTelemetry, ImageProvision, FileTransfer, Networking, VolumeStore):
    def __init__(
        self,
        capacity: NodeCapacity | None = None,
        images: Iterable[str] = (),
        clock: Callable[[], float] | None = None,
        engine_url: str = "fake://engine",
        builds_environments: bool = True,
        frozen_timeout_s: float = FROZEN_TIMEOUT_S,
    ) -> None:
        self.engine_url = engine_url
        self.clock: Callable[[], float] = clock if clock is not None else FakeClock()
        self.frozen_timeout_s = frozen_timeout_s
        # Every build_environment call, in order (tests assert what was built where).
        self.builds: list[FakeBuild] = []
        self._builds_environments = builds_environments
        self._capacity = replace(capacity if capacity is not None else DEFAULT_FAKE_CAPACITY)
        self._gpu_stats: list[GpuStats] = []
        self._images: set[str] = set(images)
        self._containers: dict[str, _Container] = {}
        self._networks: dict[str, _Network] = {}
        self._volumes: dict[str, VolumeInfo] = {}
        self._next_host_port = FAKE_HOST_PORT_START
        self._unreachable = False
        self._frozen = False
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
            files, dirs = _extract(spec.code_archive) if spec.code_archive is not None else ({}, set())
            now = self.clock()
            container = _Container(
                id=uuid.uuid4().hex + uuid.uuid4().hex,
                spec=replace(spec, labels=dict(spec.labels), env=dict(spec.env), ports=list(spec.ports)),
                created_at=now,
                started_at=now,
            )
            # The backend creates the workdir, then extracts the code into it.
            workdir = posixpath.normpath(spec.workdir)
            container.add_dir(workdir)
            for name in sorted(dirs):
                container.add_dir(posixpath.join(workdir, name))
            for name, data in files.items():
                container.add_file(posixpath.join(workdir, name), data)
            for volume in spec.volumes:
                if not volume.is_bind:  # an engine creates a named volume a container names, unlabelled
                    self._volumes.setdefault(volume.source, VolumeInfo(name=volume.source, created_at=now))
            for port in spec.ports:
                container.ports[port] = self._next_host_port
                self._next_host_port += 1
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

    def image_details(self, ref: str) -> ImageDetails:
        import hashlib

        with self._cond:
            self._check("image_details")
            if ref not in self._images:
                raise ImageMissingError(f"image {ref} is not on this fake engine")
        return ImageDetails(id="sha256:" + hashlib.sha256(ref.encode()).hexdigest(), labels={})

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

    # ------------------------------------------------------------------ GpuTelemetry

    def gpu_stats(self) -> list[GpuStats]:
        with self._cond:
            self._check("gpu_stats")
            given = {g.index: g for g in self._gpu_stats}
            return [given.get(g.index) or GpuStats(index=g.index, uuid=g.uuid, utilization_percent=0.0, memory_used=0,
                                                   memory_total=g.memory)
                    for g in sorted(self._capacity.gpus, key=lambda g: g.index)]

    # ------------------------------------------------------------------ ImageProvision

    @property
    def builds_environments(self) -> bool:
        return self._builds_environments

    def build_environment(self, env: EnvSpec, progress: Progress | None = None) -> str:
        with self._cond:
            self._check("build_environment")
            if not self._builds_environments:
                raise UnsupportedError(f"engine {self.engine_url} cannot build environments",
                                       details={"engine": self.engine_url})
            tag = fake_env_tag(env)
            cached = tag in self._images
            self._images.add(tag)
            self.builds.append(FakeBuild(env=env, tag=tag, cached=cached))
        if progress is not None:
            progress(f"env: {tag} exists" if cached else f"env: built {tag}")
        return tag

    def build_model_server(self, bundle: Path, runtime: str, progress: Progress | None = None) -> str:
        """A tag named by the bundle's content, as the real build's is."""
        digest = hashlib.sha256(runtime.encode())
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            digest.update(path.relative_to(bundle).as_posix().encode() + b"\0" + path.read_bytes())
        tag = f"deepdock/serve:{digest.hexdigest()[:24]}"
        with self._cond:
            self._check("build_model_server")
            if not self._builds_environments:
                raise UnsupportedError(f"engine {self.engine_url} cannot build serving images",
                                       details={"engine": self.engine_url})
            self._images.add(tag)
        if progress is not None:
            progress(f"serving: built {tag}")
        return tag

    def export_image(self, ref: str) -> Iterator[bytes]:
        with self._cond:
            self._check("export_image")
            if ref not in self._images:
                raise ImageMissingError(f"image {ref} is not present on {self.engine_url}",
                                        details={"image": ref, "engine": self.engine_url})
        data = json.dumps({EXPORT_MARKER_KEY: ref}).encode()
        # Two chunks, so a consumer that only reads the first one is caught.
        half = len(data) // 2
        return iter([data[:half], data[half:]])

    def import_image(self, data: Iterable[bytes]) -> None:
        with self._cond:
            self._check("import_image")
        # Read outside the lock: the stream may come from another fake (or block on one).
        raw = bytes(data) if isinstance(data, (bytes, bytearray)) else b"".join(data)
        try:
            ref = json.loads(raw)[EXPORT_MARKER_KEY]
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"load image failed on {self.engine_url}: not an image archive") from exc
        with self._cond:
            self._images.add(str(ref))

    # ------------------------------------------------------------------ FileTransfer

    def copy_out(self, container_id: str, path: str) -> bytes:
        with self._cond:
            self._check("copy_out")
            container = self._get(container_id)
            where = _absolute(path)
            top = posixpath.basename(where) or "."
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode="w:") as tar:
                if where in container.files:
                    _add_file(tar, top, container.files[where])
                elif where in container.dirs or where == "/":
                    _add_dir(tar, top)
                    prefix = where.rstrip("/") + "/"
                    for d in sorted(d for d in container.dirs if d.startswith(prefix)):
                        _add_dir(tar, posixpath.join(top, d[len(prefix):]))
                    for f in sorted(f for f in container.files if f.startswith(prefix)):
                        _add_file(tar, posixpath.join(top, f[len(prefix):]), container.files[f])
                else:
                    raise self._path_missing(container_id, path)
            return out.getvalue()

    def copy_in(self, container_id: str, path: str, archive: bytes) -> None:
        with self._cond:
            self._check("copy_in")
            container = self._get(container_id)
            where = _absolute(path)
            if where in container.files:
                raise EngineError(f"copy into {path} of container {container_id} failed on {self.engine_url}: "
                                  "extraction point is not a directory")
            if where not in container.dirs and where != "/":
                raise self._path_missing(container_id, path)
            try:
                files, dirs = _extract(archive)
            except SpecError as exc:
                raise EngineError(f"copy into {path} of container {container_id} failed on {self.engine_url}: "
                                  f"{exc.message}") from exc
            for name in sorted(dirs):
                container.add_dir(posixpath.join(where, name))
            for name, data in files.items():
                container.add_file(posixpath.join(where, name), data)

    # ------------------------------------------------------------------ Networking

    def create_network(self, name: str, labels: dict[str, str], *, isolated: bool = False) -> str:
        with self._cond:
            self._check("create_network")
            if name not in self._networks:
                self._networks[name] = _Network(id=uuid.uuid4().hex + uuid.uuid4().hex, labels=dict(labels),
                                                isolated=isolated)
            return self._networks[name].id

    def remove_network(self, name: str) -> None:
        with self._cond:
            self._check("remove_network")
            if name not in self._networks:
                return
            attached = [c.spec.name for c in self._containers.values()
                        if c.spec.network == name and c.status == STATUS_RUNNING]
            if attached:
                raise EngineError(f"remove network {name} failed on {self.engine_url}: "
                                  f"network {name} has active endpoints ({', '.join(attached)})")
            del self._networks[name]

    def list_networks(self, labels: dict[str, str]) -> list[str]:
        with self._cond:
            self._check("list_networks")
            return sorted(n for n, net in self._networks.items()
                          if all(net.labels.get(k) == v for k, v in labels.items()))

    # ------------------------------------------------------------------ VolumeStore

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        with self._cond:
            self._check("ensure_volume")
            self._volumes.setdefault(name, VolumeInfo(name=name, labels=dict(labels), created_at=self.clock()))

    def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        with self._cond:
            self._check("list_volumes")
            return [v for n, v in sorted(self._volumes.items()) if all(v.labels.get(k) == x for k, x in labels.items())]

    def remove_volume(self, name: str) -> None:
        with self._cond:
            self._check("remove_volume")
            if name not in self._volumes:
                return
            # Like an engine: any container that names it, running or not, holds it until removed.
            users = [c.spec.name for c in self._containers.values()
                     if any(v.source == name and not v.is_bind for v in c.spec.volumes)]
            if users:
                raise ConflictError(f"volume {name} is in use by a container on {self.engine_url} ({', '.join(users)})")
            del self._volumes[name]

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

    def set_frozen(self, frozen: bool = True) -> None:
        """Simulate a SIGSTOPped engine: every call blocks (real time) until unfrozen - then it goes on
        as normal - or for ``frozen_timeout_s``, then raises ``EngineUnreachableError`` (a timeout)."""
        with self._cond:
            self._frozen = frozen
            self._cond.notify_all()

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

    def set_gpu_stats(self, stats: list[GpuStats]) -> None:
        """What ``gpu_stats`` reports for these devices (the others read as idle)."""
        with self._cond:
            self._gpu_stats = list(stats)

    def set_stats(self, container_id: str, stats: ContainerStats) -> None:
        with self._cond:
            self._get(container_id).stats = stats

    def fail_next(self, method: str, error: Exception) -> None:
        """Make the next call of ``method`` (e.g. "run", "inspect") raise ``error`` once."""
        with self._cond:
            self._failures.setdefault(method, []).append(error)

    def files(self, container_id: str) -> dict[str, bytes]:
        """Every regular file of the container (the code archive's, under the workdir, and those of
        ``put_file`` and ``copy_in``): absolute path -> content."""
        with self._cond:
            return dict(self._get(container_id).files)

    def put_file(self, container_id: str, path: str, data: bytes | str) -> None:
        """Write a file as the job would (e.g. an artifact); its folders are created. ``path`` is absolute."""
        if not path.startswith("/"):
            raise ValueError(f"put_file needs an absolute path, got {path!r}")
        with self._cond:
            self._get(container_id).add_file(posixpath.normpath(path), data.encode() if isinstance(data, str) else data)

    def spec_of(self, container_id: str) -> ContainerSpec:
        """The spec a container was created from (what the server asked for)."""
        with self._cond:
            return self._get(container_id).spec

    # ------------------------------------------------------------------ internals

    def _check(self, method: str) -> None:
        """Called holding ``_cond`` at the start of every engine call."""
        if self._closed:
            raise EngineError(f"backend for {self.engine_url} is closed")
        # wait_for releases the lock while it waits, so other calls (and set_frozen) are not held up.
        if self._frozen and not self._cond.wait_for(lambda: not self._frozen, timeout=self.frozen_timeout_s):
            raise EngineUnreachableError(
                f"container engine {self.engine_url} is unreachable: {method} timed out after "
                f"{self.frozen_timeout_s:g}s (the engine does not answer)",
                details={"engine": self.engine_url},
            )
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

    def _path_missing(self, container_id: str, path: str) -> NotFoundError:
        return NotFoundError(f"{path} in container {container_id} not found on {self.engine_url}",
                             details={"container": container_id, "path": path, "engine": self.engine_url})

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
        check_ports(spec, self.engine_url)
        if spec.network is not None and spec.network not in self._networks and spec.network not in BUILTIN_NETWORKS:
            raise EngineError(f"create container {spec.name} failed on {self.engine_url}: network {spec.network} not found")

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


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise EngineError(f"container paths must be absolute, got {path!r}")
    return posixpath.normpath(path)


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _safe_name(name: str) -> str | None:
    """A member name relative to the extraction folder, or None when it would escape it."""
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in (".", "") or clean == ".." or clean.startswith("../"):
        return None
    return clean


def _extract(archive: bytes) -> tuple[dict[str, bytes], set[str]]:
    """Read a tar or tar.gz the way the Docker backend extracts one: regular files (name -> content) and
    directories, relative, nothing escaping; links and devices are dropped. A corrupt one is a spec error."""
    try:
        data = gzip.decompress(archive) if archive[:2] == b"\x1f\x8b" else archive
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            files: dict[str, bytes] = {}
            dirs: set[str] = set()
            for member in tar.getmembers():
                name = _safe_name(member.name)
                if name is None:
                    continue
                if member.isdir():
                    dirs.add(name)
                elif member.isfile():
                    extracted = tar.extractfile(member)
                    files[name] = extracted.read() if extracted else b""
            return files, dirs
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SpecError(f"code archive is not a valid tar or tar.gz: {exc}") from exc
