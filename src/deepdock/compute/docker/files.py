"""``FileTransfer`` on a Docker engine: ``docker cp`` in both directions (the archive endpoint).

It works on stopped containers too, which is what collecting a finished job's artifacts needs. Copies
use the archive client (``ARCHIVE_TIMEOUT_S``), never the short control timeout.
"""

from __future__ import annotations

import docker
import docker.errors

from deepdock.compute.abilities import FileTransfer
from deepdock.compute.docker.errors import engine_errors, engine_message
from deepdock.errors import NotFoundError


class DockerFileTransfer(FileTransfer):
    """Mixed into ``DockerBackend``, which sets these attributes."""

    engine_url: str
    _archive_api: docker.APIClient

    def copy_out(self, container_id: str, path: str) -> bytes:
        with engine_errors(self.engine_url, f"copy {path} out of container {container_id}"):
            try:
                stream, _stat = self._archive_api.get_archive(container_id, path)
                # The status is checked at the request; the body is read whole (artifacts, files).
                return b"".join(stream)
            except docker.errors.NotFound as exc:
                raise self._missing(container_id, path, exc) from exc

    def copy_in(self, container_id: str, path: str, archive: bytes) -> None:
        with engine_errors(self.engine_url, f"copy into {path} of container {container_id}"):
            try:
                self._archive_api.put_archive(container_id, path, archive)
            except docker.errors.NotFound as exc:
                raise self._missing(container_id, path, exc) from exc

    def _missing(self, container_id: str, path: str, exc: docker.errors.NotFound) -> NotFoundError:
        # One 404 for a missing container and a missing path; the engine's words tell which.
        return NotFoundError(
            f"{path} in container {container_id} not found on engine {self.engine_url}: {engine_message(exc)}",
            details={"container": container_id, "path": path, "engine": self.engine_url},
        )
