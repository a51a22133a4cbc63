"""How one Docker engine is reached: its URL, TLS, the pinned API version and the timeout of each kind
of call.

Control calls (ping, inspect, list, create, start, remove) must fail fast: a frozen engine must not hold
the caller (a reconcile pass over every node) for long. Archive copies and image transfers move real
data and need far longer. Each kind gets its own HTTP client, so a long timeout never lengthens a
control call and a long transfer never takes a connection a control call waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import docker
import requests

from deepdock.compute.docker.errors import engine_errors

DEFAULT_UNIX_SOCKET = "unix:///var/run/docker.sock"
# Docker 20.10's API; engines up to today accept it, so no handshake is needed: a backend can be made
# while its engine is down (the server registers nodes that may be offline).
API_VERSION = "1.41"
# HTTP timeout of one control request. ``stop`` adds its grace to it (docker-py does).
CONTROL_TIMEOUT_S = 10.0
# HTTP timeout of one archive copy into or out of a container (code, artifacts).
ARCHIVE_TIMEOUT_S = 120.0
# HTTP timeout of one image export, import or environment build (a torch image is gigabytes).
IMAGE_TRANSFER_TIMEOUT_S = 1800.0
# Hosts of a TCP engine URL that mean "this machine".
_LOOPBACK_HOSTS = ("127.", "localhost", "[::1]")


@dataclass(frozen=True)
class TlsConfig:
    """Client TLS for ``tcp://`` engines: paths to the CA bundle and the client certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True

    def to_docker(self) -> docker.tls.TLSConfig:
        client_cert = (self.cert, self.key) if self.cert and self.key else None
        return docker.tls.TLSConfig(client_cert=client_cert, ca_cert=self.ca,
                                    verify=(self.ca or True) if self.verify else False)


def use_own_ca(api: docker.APIClient) -> None:
    """Make a TLS client verify with its own CA. requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a
    session's CA (docker/docker-py#2433), so on hosts that set them every TLS engine failed verification.
    Proxies from the environment still apply."""
    api.trust_env = False
    api.proxies = requests.utils.get_environ_proxies(api.base_url)


def is_local_engine(engine_url: str) -> bool:
    """Whether the engine runs on this host (unix socket, named pipe, docker's default, loopback TCP).

    Only such an engine can build environments: the build reaches back to our wheel server on loopback.
    """
    if not engine_url or engine_url.startswith(("unix://", "npipe://")):
        return True
    host = engine_url.split("://", 1)[-1]
    return host.startswith(_LOOPBACK_HOSTS)


def api_client(engine_url: str, tls: TlsConfig | None, timeout_s: float) -> docker.APIClient:
    """A low-level client; makes no request (the version is pinned)."""
    with engine_errors(engine_url, "connect"):
        api = docker.APIClient(base_url=engine_url, version=API_VERSION, timeout=timeout_s,
                               tls=tls.to_docker() if tls is not None else False)
    if tls is not None:
        use_own_ca(api)
    return api


def sdk_client(engine_url: str, tls: TlsConfig | None, timeout_s: float) -> Any:
    """A high-level ``docker.DockerClient`` (what ``deepdock.envs`` builds with), same TLS rules."""
    with engine_errors(engine_url, "connect"):
        client = docker.DockerClient(base_url=engine_url, version=API_VERSION, timeout=timeout_s,
                                     tls=tls.to_docker() if tls is not None else False)
    if tls is not None:
        use_own_ca(client.api)
    return client
