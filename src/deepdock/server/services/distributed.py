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
from collections.abc import Sequence
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api.enums import AttemptNetwork
from deepdock.compute.abilities import Networking
from deepdock.compute.base import ComputeBackend
from deepdock.errors import DeepdockError
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
# On host networking the interface is the one whose subnet holds the node's address; only the node knows
# its name, so a POSIX-sh preamble reads it from /proc/net/route inside the container (any image with
# /bin/sh, no tool needed) and exports it unless the job set its own. Routes are little-endian hex.
HOST_INTERFACE_PREAMBLE = (
    'if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && [ -n "${DEEPDOCK_NODE_ADDR_HEX:-}" ]; then '
    'while read -r dd_if dd_dest dd_gw dd_flags dd_ref dd_use dd_metric dd_mask dd_rest; do '
    '[ "$dd_if" = Iface ] && continue; [ "$dd_mask" = 00000000 ] && continue; '
    'if [ $(( 0x$DEEPDOCK_NODE_ADDR_HEX & 0x$dd_mask )) -eq $(( 0x$dd_dest )) ]; then '
    'export GLOO_SOCKET_IFNAME="$dd_if"; break; fi; done < /proc/net/route; fi; '
    'if [ -z "${NCCL_SOCKET_IFNAME:-}" ] && [ -n "${GLOO_SOCKET_IFNAME:-}" ]; then '
    'export NCCL_SOCKET_IFNAME="$GLOO_SOCKET_IFNAME"; fi; '
    'exec "$@"'
)
LAUNCHER_NAME = "deepdock-launch"
_VAR_RE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def one_node_only(spec: JobSpec, host_network_allowed: bool) -> bool:
    """Whether the scheduler must keep the gang on one node: its network cannot span nodes."""
    if spec.replicas < 2 or spec.network in ("none", "host"):
        return False
    return spec.network == "private" or not host_network_allowed


def attempt_network(spec: JobSpec, node_names: Sequence[str]) -> AttemptNetwork:
    """The network of a placed attempt (``node_names``: the node of each rank)."""
    if spec.network == "none" or (spec.network == "auto" and spec.replicas == 1):
        return AttemptNetwork.NONE
    if spec.network == "host" or len(set(node_names)) > 1:
        return AttemptNetwork.HOST
    return AttemptNetwork.PRIVATE


def allocate_master_port(session: Session) -> int | None:
    """A rendezvous port no open host-network attempt holds (None when all are held: the start step
    then fails the attempt back into the queue, naming why). Called by the schedule step only, which
    runs alone (the leader's lease), so two attempts never pick the same port."""
    taken = set(session.scalars(select(Attempt.master_port).where(
        Attempt.finished_at.is_(None), Attempt.master_port.is_not(None))))
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


def network_name(job_id: str, attempt_number: int) -> str:
    return f"deepdock-{job_id}-{attempt_number}"


def remove_gang_network(backend: ComputeBackend, node: str, name: str) -> bool:
    """Remove an attempt's private network from a node (after its containers); False if it could not be
    now (the collect step tries again). A node that cannot create networks never had one."""
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
             master_port: int) -> dict[str, str]:
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
        for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            if name not in spec.env:
                env[name] = PRIVATE_INTERFACE
    elif network == AttemptNetwork.HOST:
        hex_address = _route_hex(rank_addresses[rank])
        if hex_address:
            env["DEEPDOCK_NODE_ADDR_HEX"] = hex_address
    return env


def _route_hex(address: str) -> str:
    """An IPv4 address as /proc/net/route writes it (little-endian hex); '' for a name or IPv6."""
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return ""
    return "".join(f"{int(p):02X}" for p in reversed(parts))


def expand_command(command: Sequence[str], platform_env: dict[str, str]) -> list[str]:
    """``$NAME`` and ``${NAME}`` in the command's arguments become the platform's variables (so
    ``--nnodes=$DEEPDOCK_NNODES`` works without a shell, as Kubernetes does with ``$(NAME)``). Only the
    variables deepdock sets (a job cannot set those itself), so a shell script's own variables are left
    to the shell; ``$$`` (a shell's PID) is left as it is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$$"
        name = match.group(2) or match.group(3)
        return platform_env.get(name, match.group(0))

    return [_VAR_RE.sub(replace, arg) for arg in command]


def launch_command(command: list[str], network: AttemptNetwork) -> list[str]:
    """On host networking, the command behind the preamble that names the node's interface for gloo/NCCL."""
    if network != AttemptNetwork.HOST:
        return command
    return ["/bin/sh", "-c", HOST_INTERFACE_PREAMBLE, LAUNCHER_NAME, *command]
