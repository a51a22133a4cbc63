"""The Docker Engine backend and its abilities (stats, images, files, networks and ports)."""

from deepdock.compute.docker.backend import DockerBackend
from deepdock.compute.docker.connection import (
    API_VERSION,
    ARCHIVE_TIMEOUT_S,
    CONTROL_TIMEOUT_S,
    IMAGE_TRANSFER_TIMEOUT_S,
    TlsConfig,
    is_local_engine,
    use_own_ca,
)

__all__ = [
    "API_VERSION",
    "ARCHIVE_TIMEOUT_S",
    "CONTROL_TIMEOUT_S",
    "IMAGE_TRANSFER_TIMEOUT_S",
    "DockerBackend",
    "TlsConfig",
    "is_local_engine",
    "use_own_ca",
]
