# (``ability(backend, Kind)`` takes an abstract class on purpose; mypy would demand a concrete one.)
"""Optional abilities of a compute backend, beside ``ComputeBackend`` (dstack's ``ComputeWith...Support``).

A backend implements the abilities its engine has; the server asks with ``ability(backend, Kind)``,
which raises ``UnsupportedError`` with a sentence naming the node and what it lacks, so a node without
an ability gets a clear reason (a start failure a user can read), never an ``AttributeError``.

Every ability keeps the error contract of ``compute.base``: ``EngineUnreachableError``,
``NotFoundError``, ``EngineError`` and nothing else.

- ``StatsSource``     live CPU/memory use of a running container.
- ``GpuTelemetry``    utilization, memory, temperature and power of each GPU of the node.
- ``ImageProvision``  build an environment's content-addressed image on this engine, and move images
                      between engines (there is no registry between nodes: save → load).
- ``FileTransfer``    tar archives out of and into a container (running or stopped): artifacts, files.
- ``Networking``      labelled networks a gang or a service can share, and published ports
                      (``ContainerSpec.ports`` / ``ContainerState.ports``).
- ``VolumeStore``     labelled named volumes: created before a container mounts them (so they carry the
                      project's labels), listed and removed by label.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from deepdock.compute.base import ComputeBackend, ContainerStats, GpuStats
from deepdock.errors import UnsupportedError
from deepdock.specs.env import EnvSpec

Progress = Callable[[str], None]


class StatsSource(ABC):
    """Live resource usage of a running container."""

    @abstractmethod
    def stats(self, container_id: str) -> ContainerStats:
        """One usage sample; ``NotFoundError`` if the container does not exist."""


class GpuTelemetry(ABC):
    """What each GPU of the node is doing now, from the node's own NVIDIA tools."""

    @abstractmethod
    def gpu_stats(self) -> list[GpuStats]:
        """One sample of every GPU of the node, by index; [] on a node without GPUs. ``EngineError`` when
        the node has GPUs but the tools could not be asked (the caller keeps its last sample)."""


class ImageProvision(ABC):
    """Environment images on this engine: build them here, or copy them from another engine."""

    @property
    @abstractmethod
    def builds_environments(self) -> bool:
        """Whether environments can be built on this engine. A build reaches back to this host (the
        wheel server listens on loopback), so only an engine on the server's own host can."""

    @abstractmethod
    def build_environment(self, env: EnvSpec, progress: Progress | None = None) -> str:
        """Build the environment's image (a no-op when its tag exists) and return the tag.

        Never pulls: the base comes from Debian packages when it is missing. ``EngineError`` (or a
        ``BuildError``) when the build fails; ``UnsupportedError`` where ``builds_environments`` is False.
        """

    @abstractmethod
    def build_model_server(self, bundle: Path, runtime: str, progress: Progress | None = None) -> str:
        """Build the serving image of a model bundle (a folder with ``deepdock-model.json``,
        envs/serving_image.py) and return its tag; a no-op when it exists. Same rules as
        ``build_environment``: offline, and only where ``builds_environments``."""

    @abstractmethod
    def export_image(self, ref: str) -> Iterator[bytes]:
        """The image as a ``docker save`` stream that keeps exactly the tag ``ref``."""

    @abstractmethod
    def import_image(self, data: Iterable[bytes]) -> None:
        """Load a stream made by ``export_image`` of any engine (``docker load``)."""


class FileTransfer(ABC):
    """Archives out of and into containers; works on stopped containers too."""

    @abstractmethod
    def copy_out(self, container_id: str, path: str) -> bytes:
        """A tar of ``path`` (a folder or a file; its own name is the archive's top entry).

        ``NotFoundError`` when the container or the path does not exist."""

    @abstractmethod
    def copy_in(self, container_id: str, path: str, archive: bytes) -> None:
        """Extract a tar into the existing folder ``path`` of the container."""


class Networking(ABC):
    """Networks shared by the containers of a gang or a service on one engine."""

    @abstractmethod
    def create_network(self, name: str, labels: dict[str, str], *, isolated: bool = False) -> str:
        """Create a bridge network (or return the id of the one of that name); returns its id.

        ``isolated``: its containers reach each other and nothing else - no route out, and no address of
        the node's own on it (a gang's private network: compute.docker.networks says how)."""

    @abstractmethod
    def remove_network(self, name: str) -> None:
        """Remove it; one that is gone is a no-op. ``EngineError`` while containers are attached."""

    @abstractmethod
    def list_networks(self, labels: dict[str, str]) -> list[str]:
        """Names of the networks carrying every one of ``labels``."""


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float | None = None


class VolumeStore(ABC):
    """Named volumes of this engine, each labelled by whoever created it."""

    @abstractmethod
    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create the volume with ``labels``, or leave the existing one of that name as it is."""

    @abstractmethod
    def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        """The volumes carrying every one of ``labels``, by name."""

    @abstractmethod
    def remove_volume(self, name: str) -> None:
        """Remove it; one that is gone is a no-op. ``ConflictError`` while a container uses it."""


A = TypeVar("A")

# What each ability lets a node do, for the reason a node without it gets.
_WHAT: dict[type, str] = {
    StatsSource: "report container usage",
    ImageProvision: "build or receive environment images",
    FileTransfer: "copy files out of or into containers",
    Networking: "create networks or publish ports",
    VolumeStore: "manage named volumes",
}


def ability(backend: ComputeBackend, kind: type[A], node: str = "") -> A:
    """``backend`` as ``kind``, or ``UnsupportedError`` naming the node and what it cannot do."""
    if isinstance(backend, kind):
        return backend
    where = f"node {node}" if node else f"engine {getattr(backend, 'engine_url', type(backend).__name__)}"
    raise UnsupportedError(
        f"{where} ({type(backend).__name__}) cannot {_WHAT.get(kind, kind.__name__)}",
        details={"node": node, "ability": kind.__name__},
    )


def copy_image(source: ComputeBackend, target: ComputeBackend, ref: str, *, node: str = "") -> bool:
    """Make ``ref`` present on ``target`` by streaming it from ``source``; False if it already was."""
    if target.image_exists(ref):
        return False
    ability(target, ImageProvision, node).import_image(ability(source, ImageProvision).export_image(ref))
    return True
