"""The compute protocol: what the server asks of a container engine, and nothing more.

One small abstract class (``ComputeBackend``) with plain dataclasses going in and out, so the server's
reconcilers never see a docker SDK object. What only some engines can do (live stats, building and
moving images, copying files, networks and published ports) are the small optional interfaces of
``compute.abilities``; the server asks for one with ``ability(backend, Kind, node)``.

Errors are always from ``deepdock.errors``:

- ``EngineUnreachableError`` - the engine did not answer (connection refused, timeout); names the engine.
- ``ImageMissingError``      - ``run`` was given an image that is not present on the node; names the image.
- ``NotFoundError``          - ``inspect``/``logs``/``stop`` of a container that does not exist (any more).
- ``ConflictError``          - ``run`` with a container name that is already taken on this engine.
- ``EngineError``            - anything else the engine refused, with the engine's own message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from deepdock.errors import EngineError

# Label keys the server puts on every container it creates; ``list_containers`` filters on them so a
# restarted server re-adopts what is already running instead of starting it twice.
LABEL_MANAGED = "deepdock.managed"
LABEL_JOB = "deepdock.job"
LABEL_ATTEMPT = "deepdock.attempt"
LABEL_NODE = "deepdock.node"

# Container statuses, as docker names them (``State.Status``).
STATUS_CREATED = "created"
STATUS_RUNNING = "running"
STATUS_PAUSED = "paused"
STATUS_RESTARTING = "restarting"
STATUS_REMOVING = "removing"
STATUS_EXITED = "exited"
STATUS_DEAD = "dead"
FINISHED_STATUSES = frozenset({STATUS_EXITED, STATUS_DEAD})

# Exit codes of a process ended by a signal are 128 + the signal number.
EXIT_CODE_SIGTERM = 143
EXIT_CODE_SIGKILL = 137

DEFAULT_WORKDIR = "/workspace"
# TCP port numbers a container may publish.
MIN_PORT = 1
MAX_PORT = 65535


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of a node. ``memory`` is in bytes (nvidia-smi reports MiB; we convert)."""

    index: int
    uuid: str
    model: str
    memory: int


@dataclass(frozen=True)
class GpuStats:
    """One sample of one GPU, as the NVIDIA tools on its node report it. Memory in bytes; a reading the
    device does not support (nvidia-smi's ``[N/A]``/``[Not Supported]``, e.g. utilization under MIG) is
    None rather than a made-up zero."""

    index: int
    uuid: str
    utilization_percent: float | None
    memory_used: int | None
    memory_total: int | None
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass
class NodeCapacity:
    """What one engine offers. ``memory`` in bytes; ``cpus`` as the engine counts them (logical CPUs)."""

    cpus: float
    memory: int
    gpus: list[GpuInfo]
    engine_version: str
    os: str
    arch: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeMount:
    """``source`` is an absolute host path (a bind mount) or the name of a named volume."""

    source: str
    target: str
    read_only: bool = True

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


@dataclass
class ContainerSpec:
    """Everything needed to create one container. Sizes are bytes, ``cpus`` a (fractional) CPU count.

    ``gpu_share`` below 1.0 means this container shares its single device with others; shares are a
    scheduling promise only - the engine does not isolate GPU memory or compute between them.
    ``user`` None means: the image's configured user when it is non-root, else root only where the
    engine remaps user ids, else an unprivileged fallback (the Docker backend's ``JOB_FALLBACK_USER``).
    ``code_archive`` is a tar (optionally gzip-compressed) extracted into ``workdir`` before start.
    ``network`` None means no network at all (``network_mode=none``).
    ``ports`` are container TCP ports to publish on every host address with a host port the engine
    picks (read back in ``ContainerState.ports``); publishing needs a ``network``.
    """

    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    cpus: float
    memory: int
    pids_limit: int
    shm_size: int
    gpu_indices: list[int] = field(default_factory=list)
    gpu_share: float = 1.0
    workdir: str = DEFAULT_WORKDIR
    user: str | None = None
    volumes: list[VolumeMount] = field(default_factory=list)
    code_archive: bytes | None = None
    network: str | None = None
    hostname: str | None = None
    ports: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ImageDetails:
    id: str  # the engine's content id ("sha256:..."), the same on every engine the image was copied to
    labels: dict[str, str]


@dataclass
class ContainerState:
    """Observed state of one container. Times are epoch seconds; ``exit_code`` is None until it exits.

    ``ports`` maps each published container port to its host port while the container runs (engines
    release the host ports when it ends, so a finished container has none).
    """

    id: str
    name: str
    status: str
    exit_code: int | None
    oom_killed: bool
    started_at: float | None
    finished_at: float | None
    labels: dict[str, str]
    error: str = ""
    image: str = ""
    created_at: float | None = None
    ports: dict[int, int] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == STATUS_RUNNING

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class ContainerStats:
    """One sample of a running container's usage. ``cpu_percent`` is of one CPU (200.0 = two full CPUs)."""

    cpu_percent: float
    memory_usage: int
    memory_limit: int
    pids: int


class ComputeBackend(ABC):
    """One container engine. Implementations are thread-safe for concurrent calls."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the engine answers; raise ``EngineUnreachableError`` otherwise."""

    @abstractmethod
    def capacity(self) -> NodeCapacity:
        """CPUs, memory and GPUs of the node (cached briefly by implementations that must probe)."""

    @abstractmethod
    def run(self, spec: ContainerSpec) -> str:
        """Create the container, put the code into ``workdir``, start it; return its id.

        Never pulls: an image that is not present raises ``ImageMissingError``. If creation succeeds
        but starting fails, the half-made container is removed before the error is raised.
        """

    @abstractmethod
    def inspect(self, container_id: str) -> ContainerState:
        """Current state; ``NotFoundError`` if the container does not exist. Accepts an id or a name."""

    @abstractmethod
    def list_containers(self, labels: dict[str, str]) -> list[ContainerState]:
        """All containers (running and finished) carrying every one of ``labels``, oldest first."""

    @abstractmethod
    def logs(
        self,
        container_id: str,
        since: float | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        """stdout and stderr interleaved as raw byte chunks (not split into lines).

        ``since`` (epoch seconds) skips output written before it. ``follow`` keeps the iterator open
        until the container exits. ``timestamps`` prefixes each line with an RFC 3339 time and a space.
        """

    @abstractmethod
    def stop(self, container_id: str, grace_s: float) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Stopping a finished container is a no-op."""

    @abstractmethod
    def remove(self, container_id: str) -> None:
        """Remove the container, killing it if it still runs. Removing one that is gone is a no-op."""

    @abstractmethod
    def image_exists(self, ref: str) -> bool:
        """Whether the image (tag or id) is present on the node."""

    def image_details(self, ref: str) -> ImageDetails:
        """The image's content id and labels (lineage of what a job ran). ``ImageMissingError`` when absent.

        Not abstract: an engine that cannot tell records no digest, which is not a reason to fail a job."""
        return ImageDetails(id="", labels={})

    @abstractmethod
    def close(self) -> None:
        """Release connections. The backend must not be used afterwards."""



def check_ports(spec: ContainerSpec, engine_url: str) -> None:
    """The one check of ``spec.ports``, shared by every backend so a spec fails alike everywhere.

    A published port forwards to the container's address on a network; ``network=None`` has none.
    """
    if not spec.ports:
        return
    if spec.network is None:
        raise EngineError(
            f"container {spec.name}: publishing ports {spec.ports} needs a network (ContainerSpec.network is None)",
            details={"engine": engine_url, "ports": list(spec.ports)},
        )
    bad = [p for p in spec.ports if not MIN_PORT <= p <= MAX_PORT]
    if bad:
        raise EngineError(f"container {spec.name}: invalid ports {bad} (allowed {MIN_PORT}-{MAX_PORT})",
                          details={"engine": engine_url, "ports": bad})
