"""The Docker Engine backend."""

from deepdock.compute.docker.backend import DockerBackend, TlsConfig, use_own_ca

__all__ = ["DockerBackend", "TlsConfig", "use_own_ca"]
