"""How the replicas of a gang reach each other: the attempt's network, its rendezvous port, and the
environment every rank gets (torchrun's variables and deepdock's own). docs/distributed.md has the model.

Which network an attempt gets is decided when it is placed (the schedule step), from the job's
``network`` and where its replicas landed:

- ``none``: a single-replica job (or a gang that asked for none) has no network at all.
- ``private``: a gang on one node gets a bridge network of the attempt's own, created ``internal``
  (no route out) and with no address on the node's side (``inhibit_ipv4``), so its ranks reach each
  other and nothing else, not even the node. Ranks find each other by container name.
- ``host``: ranks on several nodes share the nodes' own network, reached at each node's address. With
  plain Docker engines this is what works across hosts (docs/distributed.md compares the options); it
  also reaches the node's own services, so a project uses it only by an admin's grant. Every open
  host-network attempt holds its own rendezvous port, so two gangs on the same nodes never collide.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from deepdock.api.enums import AttemptNetwork
from deepdock.compute.abilities import Networking
from deepdock.compute.base import ComputeBackend
from deepdock.errors import DeepdockError, SpecError
from deepdock.server.db.models import Attempt, Node
from deepdock.specs.job import JobSpec

log = logging.getLogger("deepdock.server")
# torch's own default, used inside a private network where no other gang can listen.
PRIVATE_MASTER_PORT = 29500
# The rendezvous ports host-network gangs take turns in (one per open attempt, cluster-wide: two nodes of
# one machine share its ports). Below the kernel's ephemeral range (32768+), where gloo's own
# connections come from, so a rendezvous port is never taken by a peer's outgoing socket.
RENDEZVOUS_PORTS = range(29500, 30500)
# The interface name torch's gloo and NCCL use on a private network (a container's only interface).
PRIVATE_INTERFACE = "eth0"
# On host networking the interface is the one whose subnet holds the node's address (the most specific
# such route not via a gateway); only the node knows its name, so a POSIX-sh preamble reads it from
# /proc/net/route inside the container (any image with /bin/sh, no tool needed) and exports it unless the
# job set its own. Routes are little-endian hex, in which a longer prefix is a larger mask number. NCCL
# reads its variable as a prefix ("eth1" would match "eth10"): "=" makes it exact.
HOST_INTERFACE_PREAMBLE = (
    'if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && [ -n "${DEEPDOCK_NODE_ADDR_HEX:-}" ]; then dd_best=-1; '
    'while read -r dd_if dd_dest dd_gw dd_flags dd_ref dd_use dd_metric dd_mask dd_rest; do '
    '[ "$dd_if" = Iface ] && continue; [ $(( 0x$dd_flags & 2 )) -ne 0 ] && continue; '
    'if [ $(( 0x$DEEPDOCK_NODE_ADDR_HEX & 0x$dd_mask )) -eq $(( 0x$dd_dest )) ] '
    '&& [ $(( 0x$dd_mask )) -gt "$dd_best" ]; then dd_best=$(( 0x$dd_mask )); GLOO_SOCKET_IFNAME="$dd_if"; fi; '
    'done < /proc/net/route; if [ -n "${GLOO_SOCKET_IFNAME:-}" ]; then export GLOO_SOCKET_IFNAME; fi; fi; '
    'if [ -z "${NCCL_SOCKET_IFNAME:-}" ] && [ -n "${GLOO_SOCKET_IFNAME:-}" ]; then '
    'export NCCL_SOCKET_IFNAME="=$GLOO_SOCKET_IFNAME"; fi; '
    'exec "$@"'
)
LAUNCHER_NAME = "deepdock-launch"
# How long a finished host-network attempt's port stays unused (see allocate_master_port).
PORT_QUARANTINE_S = 120.0
_VAR_RE = re.compile(r"\$(\$?)(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def one_node_only(spec: JobSpec, host_network_allowed: bool) -> bool:
    """Whether the scheduler must keep the gang on one node: its network cannot span nodes."""
    if spec.replicas < 2 or spec.network in ("none", "host"):
        return False
    return spec.network == "private" or not host_network_allowed


def attempt_network(spec: JobSpec, node_names: Sequence[str]) -> AttemptNetwork:
    """The network of a placed attempt (``node_names``: the node of each rank)."""
    if spec.ports:
        return AttemptNetwork.PUBLISHED
    if spec.network == "none" or (spec.network == "auto" and spec.replicas == 1):
        return AttemptNetwork.NONE
    if spec.network == "host" or len(set(node_names)) > 1:
        return AttemptNetwork.HOST
    return AttemptNetwork.PRIVATE


def allocate_master_port(session: Session, now: float) -> int | None:
    """A rendezvous port no open host-network attempt holds, nor one that ended in the last
    ``PORT_QUARANTINE_S`` (a lost node's gang ends at once, while its ranks on the surviving nodes, rank 0's
    store among them, may still listen until the collect step removes them). None when all are held:
    the job waits, naming why. Called by the schedule step only, which runs alone (the leader's lease),
    so two attempts never pick the same port."""
    taken = set(session.scalars(select(Attempt.master_port).where(
        Attempt.master_port.is_not(None),
        or_(Attempt.finished_at.is_(None), Attempt.finished_at > now - PORT_QUARANTINE_S))))
    return next((port for port in RENDEZVOUS_PORTS if port not in taken), None)


NO_PORT_REASON = (f"all {len(RENDEZVOUS_PORTS)} rendezvous ports ({RENDEZVOUS_PORTS.start}-"
                  f"{RENDEZVOUS_PORTS.stop - 1}) are held by running host-network gangs")


def node_address(node: Node) -> str:
    """The address other nodes reach ``node`` at: the one given at `node add`, else the engine URL's host
    (a tcp:// engine), else loopback (a local engine: only engines of this same host reach it)."""
    if node.address:
        return node.address
    host = urlparse(node.engine_url or "").hostname
    return host or "127.0.0.1"


def resolve_address(address: str, engine_url: str) -> str:
    """What `node add` stores as the node's address: the one given, else the engine URL's host, as an IPv4
    address (a name is resolved here, once): the preamble picks gloo's interface by subnet, which a name
    does not have. '' for a local engine (then loopback). ``SpecError`` when a given name does not resolve."""
    host = address or urlparse(engine_url or "").hostname or ""
    if not host or _route_hex(host):
        return host
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        if address:
            raise SpecError(f"node address {address!r} does not resolve to an IPv4 address") from None
        return host  # the engine's own name: kept, and described as such (docs/distributed.md)
    return str(found[0][4][0])


def network_name(job_id: str, attempt_number: int) -> str:
    return f"deepdock-{job_id}-{attempt_number}"


def remove_gang_network(backend: ComputeBackend, node: str, name: str) -> bool:
    """Remove an attempt's private network from a node (after its containers); False, logged, if it could
    not be (docs/distributed.md "Known limits": nothing retries it yet). A node that cannot create
    networks never had one."""
    if not isinstance(backend, Networking):
        return True
    try:
        backend.remove_network(name)
    except DeepdockError as exc:
        log.warning("removing network %s on %s failed: %s", name, node, exc.message)
        return False
    return True


def processes_per_replica(spec: JobSpec) -> int:
    if spec.processes_per_replica is not None:
        return spec.processes_per_replica
    return int(spec.resources.gpus) if spec.resources.gpus >= 1 else 1


def rank_env(spec: JobSpec, network: AttemptNetwork, rank: int, rank_addresses: Sequence[str],
             master_port: int, container_name: str = "") -> dict[str, str]:
    """The distributed contract of one rank: torchrun's variables for one process per container, the
    torchrun-style ``DEEPDOCK_*`` for a launcher inside it, and where gloo/NCCL should listen."""
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(spec.replicas),
        # One process per container: it sees only its own GPUs, so its local rank is 0. torchrun sets its own.
        "LOCAL_RANK": "0",
        "MASTER_ADDR": rank_addresses[0] if network != AttemptNetwork.NONE else "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "DEEPDOCK_NETWORK": str(network),
        "DEEPDOCK_NNODES": str(spec.replicas),
        "DEEPDOCK_NODE_RANK": str(rank),
        "DEEPDOCK_NPROC_PER_NODE": str(processes_per_replica(spec)),
        "DEEPDOCK_NODE_ADDRS": ",".join(rank_addresses),
        "DEEPDOCK_NODE_ADDR": rank_addresses[rank],
    }
    if network == AttemptNetwork.PRIVATE:
        if "GLOO_SOCKET_IFNAME" not in spec.env:
            env["GLOO_SOCKET_IFNAME"] = PRIVATE_INTERFACE
        if "NCCL_SOCKET_IFNAME" not in spec.env:
            env["NCCL_SOCKET_IFNAME"] = f"={PRIVATE_INTERFACE}"
    elif network == AttemptNetwork.HOST:
        env["DEEPDOCK_NODE_ADDR_HEX"] = _route_hex(rank_addresses[rank])
        if "NCCL_HOSTID" not in spec.env:
            # Two ranks' containers on one node share its hostname and boot id, so NCCL would take them for
            # one host and try shared memory across their separate IPC namespaces.
            env["NCCL_HOSTID"] = container_name
    return env


def _route_hex(address: str) -> str:
    """An IPv4 address as /proc/net/route writes it (little-endian hex); '' for a name or IPv6."""
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return ""
    return "".join(f"{int(p):02X}" for p in reversed(parts))


def expand_command(command: Sequence[str], platform_env: dict[str, str]) -> list[str]:
    """``$NAME`` and ``${NAME}`` in the command's arguments become the platform's variables (so
    ``--nnodes=$DEEPDOCK_NNODES`` works without a shell, as Kubernetes does with ``$(NAME)``), and
    ``$$NAME`` is a literal ``$NAME`` for a shell to expand. Only the variables deepdock sets (a job
    cannot set those itself) are touched, so a shell script's own variables, and ``$$``, stay as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2) or match.group(3)
        if name not in platform_env:
            return match.group(0)
        if match.group(1):  # escaped
            return match.group(0)[1:]
        return platform_env[name]

    return [_VAR_RE.sub(replace, arg) for arg in command]


def launch_command(command: list[str], network: AttemptNetwork) -> list[str]:
    """On host networking, the command behind the preamble that names the node's interface for gloo/NCCL."""
    if network != AttemptNetwork.HOST:
        return command
    return ["/bin/sh", "-c", HOST_INTERFACE_PREAMBLE, LAUNCHER_NAME, *command]
