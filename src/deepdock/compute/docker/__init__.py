"""The Docker Engine backend."""

from deepdock.compute.docker.backend import DockerBackend, TlsConfig

__all__ = ["DockerBackend", "TlsConfig"]
