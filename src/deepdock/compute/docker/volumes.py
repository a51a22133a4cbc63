"""``VolumeStore`` on a Docker engine: named volumes of the ``local`` driver, created with labels.

Docker would create a volume a container names on its own, unlabelled; creating it first is what
lets deepdock list a project's volumes and remove them (``deepdock volume ls|rm``).
"""

from __future__ import annotations

from datetime import datetime

import docker
import docker.errors

from deepdock.compute.abilities import VolumeInfo, VolumeStore
from deepdock.compute.docker.errors import engine_errors
from deepdock.errors import ConflictError

VOLUME_DRIVER = "local"
HTTP_CONFLICT = 409


def _created_at(value: object) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class DockerVolumes(VolumeStore):
    """Mixed into ``DockerBackend``, which sets these attributes."""

    engine_url: str
    _api: docker.APIClient

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        with engine_errors(self.engine_url, f"create volume {name}"):
            try:
                self._api.inspect_volume(name)
                return
            except docker.errors.NotFound:
                pass
            # Creating one that exists returns it unchanged (a concurrent start made it first).
            self._api.create_volume(name, driver=VOLUME_DRIVER, labels=dict(labels))

    def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        with engine_errors(self.engine_url, "list volumes"):
            found = self._api.volumes(filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        return sorted(
            (VolumeInfo(name=str(v["Name"]), labels=dict(v.get("Labels") or {}), created_at=_created_at(v.get("CreatedAt")))
             for v in (found or {}).get("Volumes") or []),
            key=lambda v: v.name,
        )

    def remove_volume(self, name: str) -> None:
        with engine_errors(self.engine_url, f"remove volume {name}"):
            try:
                self._api.remove_volume(name)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == HTTP_CONFLICT:
                    raise ConflictError(f"volume {name} is in use by a container on {self.engine_url}",
                                        details={"engine": self.engine_url, "volume": name}) from exc
                raise
