"""``Networking`` on a Docker engine: labelled user-defined bridge networks, and published ports.

User-defined bridges work on engines started with ``--bridge=none`` (only the default ``docker0``
bridge is gone). Ports are published on every host address (``0.0.0.0``) with a host port the engine
picks: other nodes must reach a service replica, and a fixed host port could collide with another
container. Docker's own proxy forwards them, so they work with ``--iptables=false`` too.

An isolated network (a gang's private one) is ``internal`` (no default route, no outside DNS) and has
``inhibit_ipv4`` set, so the bridge on the node holds no address: its containers reach each other and
nothing else, not even the node's own services (which ``--iptables=false`` engines could not fence off).
"""

from __future__ import annotations

from typing import Any

import docker
import docker.errors

from deepdock.compute.abilities import Networking
from deepdock.compute.docker.errors import engine_errors

NETWORK_DRIVER = "bridge"
# Where published ports listen on the host: every address, so other nodes reach them.
PUBLISH_HOST_IP = "0.0.0.0"  # noqa: S104 - deliberate, see the module docstring
PORT_PROTOCOL = "tcp"
HTTP_CONFLICT = 409
# The bridge driver's option that leaves the node's side of the bridge without an IPv4 address.
INHIBIT_IPV4_OPTION = "com.docker.network.bridge.inhibit_ipv4"


def port_bindings(ports: list[int]) -> dict[int, tuple[str]]:
    """docker-py's ``port_bindings``: each port on ``PUBLISH_HOST_IP``, host port chosen by the engine."""
    return {port: (PUBLISH_HOST_IP,) for port in ports}


def published_ports(inspect_data: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port from ``docker inspect`` (``NetworkSettings.Ports``; empty once stopped)."""
    found: dict[int, int] = {}
    raw = (inspect_data.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in raw.items():
        port, _, protocol = str(key).partition("/")
        if protocol != PORT_PROTOCOL or not bindings:
            continue
        # An engine with IPv6 lists the same host port twice (0.0.0.0 and ::); prefer the IPv4 one.
        chosen = next((b for b in bindings if b.get("HostIp") == PUBLISH_HOST_IP), bindings[0])
        if chosen.get("HostPort"):
            found[int(port)] = int(chosen["HostPort"])
    return found


class DockerNetworking(Networking):
    """Mixed into ``DockerBackend``, which sets these attributes."""

    engine_url: str
    _api: docker.APIClient

    def create_network(self, name: str, labels: dict[str, str], *, isolated: bool = False) -> str:
        existing = self._network_id(name)
        if existing is not None:
            return existing
        options = {INHIBIT_IPV4_OPTION: "true"} if isolated else None
        with engine_errors(self.engine_url, f"create network {name}"):
            try:
                created = self._api.create_network(name, driver=NETWORK_DRIVER, labels=dict(labels),
                                                   check_duplicate=True, internal=isolated, options=options)
            except docker.errors.APIError as exc:
                # Created by a concurrent caller between our lookup and our create: that one is ours too.
                raced = self._network_id(name) if exc.status_code == HTTP_CONFLICT else None
                if raced is None:
                    raise
                return raced
        return str(created["Id"])

    def remove_network(self, name: str) -> None:
        # By id: removing by name would also match a network whose id merely starts with that name.
        network_id = self._network_id(name)
        if network_id is None:
            return
        with engine_errors(self.engine_url, f"remove network {name}"):
            try:
                self._api.remove_network(network_id)
            except docker.errors.NotFound:
                return

    def list_networks(self, labels: dict[str, str]) -> list[str]:
        with engine_errors(self.engine_url, "list networks"):
            found = self._api.networks(filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        return sorted(str(n["Name"]) for n in found)

    def _network_id(self, name: str) -> str | None:
        # The engine's name filter matches substrings; only the exact name counts.
        with engine_errors(self.engine_url, f"look up network {name}"):
            found = self._api.networks(names=[name])
        return next((str(n["Id"]) for n in found if n.get("Name") == name), None)
