"""Docker-only abilities the server needs beyond the ComputeBackend protocol: building environments on
a node and copying a container's artifacts out. Both need the engine's full API, so they take a docker
SDK client made from the node's own connection settings (and nodes of other backends skip them)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from deepdock.compute.base import ComputeBackend
from deepdock.errors import DeepdockError, NotFoundError
from deepdock.server.db.models import Node

ARCHIVE_TIMEOUT_S = 120
IMAGE_COPY_TIMEOUT_S = 1800
_LOOPBACK_HOSTS = ("127.", "localhost", "[::1]")


def is_local_engine(engine_url: str) -> bool:
    """Whether the engine runs on this host (unix socket or loopback TCP), so it can reach our wheel server."""
    if not engine_url or engine_url.startswith(("unix://", "npipe://")):
        return True
    host = engine_url.split("://", 1)[-1]
    return host.startswith(_LOOPBACK_HOSTS)


def copy_image(source: Any, target: Any, tag: str) -> None:
    """Copy ``tag`` from one engine to another through this process (docker save | docker load)."""
    import docker.errors

    try:
        target.images.get(tag)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        stream = source.images.get(tag).save(named=tag)  # keep exactly this tag in the tarball
        target.images.load(b"".join(stream))
    except docker.errors.APIError as exc:
        raise DeepdockError(f"copying image {tag} to the node failed: {exc.explanation}") from None


def docker_client_for(node: Node, backend: ComputeBackend) -> Any | None:
    """A docker SDK client for ``node``, or None when the node's backend is not a Docker engine."""
    from deepdock.compute.docker import DockerBackend, TlsConfig, use_own_ca
    from deepdock.compute.docker.backend import API_VERSION

    if not isinstance(backend, DockerBackend):
        return None
    import docker

    if not (node.tls_ca or node.tls_cert):
        return docker.DockerClient(base_url=backend.engine_url, version=API_VERSION, timeout=ARCHIVE_TIMEOUT_S)
    tls = TlsConfig(ca=node.tls_ca, cert=node.tls_cert, key=node.tls_key)
    # A pinned version: "auto" would call the engine before use_own_ca() can take effect.
    client = docker.DockerClient(base_url=backend.engine_url, version=API_VERSION, tls=tls.to_docker(),
                                 timeout=ARCHIVE_TIMEOUT_S)
    use_own_ca(client.api)
    return client


def export_dir(client: Any, container_id: str, path: str, dest: Path) -> int:
    """Copy folder ``path`` out of a (stopped) container into ``dest``; returns the number of files."""
    import docker.errors

    try:
        stream, _ = client.api.get_archive(container_id, path)
        data = b"".join(stream)
    except docker.errors.NotFound:
        raise NotFoundError(f"{path} not found in container {container_id[:12]}") from None
    except docker.errors.APIError as exc:
        raise DeepdockError(f"copying {path} out of {container_id[:12]} failed: {exc.explanation}") from None
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts[1:]  # drop the folder's own name
            if not parts or not (member.isfile() or member.isdir()):
                continue
            member.name = str(Path(*parts))
            members.append(member)
            count += member.isfile()
        tar.extractall(dest, members=members, filter="data")
    return count
