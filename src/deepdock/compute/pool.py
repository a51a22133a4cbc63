"""One long-lived backend per node, made by the factory of the node's kind.

The kind is the scheme of the node's engine URL: ``fake://NAME`` is an in-memory engine (tests),
anything else (``unix://``, ``tcp://``, empty for docker's defaults) a Docker engine. The server never
constructs a backend itself: it asks the pool, so a new kind (Kubernetes, Podman) is one factory more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from deepdock.compute.base import ComputeBackend
from deepdock.errors import SpecError

KIND_DOCKER = "docker"
KIND_FAKE = "fake"


@dataclass(frozen=True)
class NodeConnection:
    """How to reach one node's engine: what a backend is made from (no server types here)."""

    name: str
    engine_url: str = ""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def kind(self) -> str:
        return node_kind(self.engine_url)


BackendFactory = Callable[[NodeConnection], ComputeBackend]


def node_kind(engine_url: str) -> str:
    return KIND_FAKE if engine_url.startswith("fake://") else KIND_DOCKER


def docker_backend(conn: NodeConnection, probe_image: str | None = None) -> ComputeBackend:
    from deepdock.compute.docker import DockerBackend, TlsConfig

    tls = None
    if conn.tls_ca or conn.tls_cert or conn.tls_key:
        tls = TlsConfig(ca=conn.tls_ca, cert=conn.tls_cert, key=conn.tls_key)
    return DockerBackend(conn.engine_url, tls=tls, probe_image=probe_image)


def docker_factories(probe_image: str | None) -> dict[str, BackendFactory]:
    """The default factories, with the image GPU nodes run nvidia-smi in (None: each picks its own)."""
    return {KIND_DOCKER: lambda conn: docker_backend(conn, probe_image)}


DEFAULT_FACTORIES: dict[str, BackendFactory] = {KIND_DOCKER: docker_backend}


class BackendPool:
    """Backends by node name, reused across calls; rebuilt when a node's connection changes."""

    def __init__(self, factories: Mapping[str, BackendFactory] | None = None) -> None:
        self._factories = dict(DEFAULT_FACTORIES if factories is None else factories)
        self._lock = threading.Lock()
        self._backends: dict[str, tuple[NodeConnection, ComputeBackend]] = {}

    def get(self, conn: NodeConnection) -> ComputeBackend:
        with self._lock:
            cached = self._backends.get(conn.name)
            if cached is not None and cached[0] == conn:
                return cached[1]
            factory = self._factories.get(conn.kind)
            if factory is None:
                raise SpecError(f"node {conn.name}: no backend for engines of kind {conn.kind!r} "
                                f"(known: {', '.join(sorted(self._factories))})")
            backend = factory(conn)
            if cached is not None:
                cached[1].close()
            self._backends[conn.name] = (conn, backend)
            return backend

    def forget(self, name: str) -> None:
        with self._lock:
            cached = self._backends.pop(name, None)
        if cached is not None:
            cached[1].close()

    def close(self) -> None:
        with self._lock:
            backends, self._backends = self._backends, {}
        for _, backend in backends.values():
            backend.close()
