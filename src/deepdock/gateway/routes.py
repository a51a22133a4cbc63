"""What the gateway should route: one route per service, each with its replicas and their weights."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# HAProxy's weight range; a replica's share of its service's traffic is its weight over the route's sum.
MAX_WEIGHT = 256
READY_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class Backend:
    """One replica: ``name`` is unique in its route and carries the revision (``r<revision>-<job>``)."""

    name: str
    address: str
    port: int
    weight: int
    revision: int

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= MAX_WEIGHT:
            raise ValueError(f"backend {self.name}: weight {self.weight} is outside 0..{MAX_WEIGHT}")
        if not 0 < self.port < 65536:
            raise ValueError(f"backend {self.name}: port {self.port} is outside 1..65535")


@dataclass(frozen=True)
class Route:
    """``/services/<path_name>/...`` → the backends, for callers whose token hashes (sha256, hex) are listed."""

    key: str
    path_name: str
    backends: tuple[Backend, ...] = ()
    token_hashes: frozenset[str] = field(default_factory=frozenset)
    health_path: str = READY_PATH

    def unweighted(self) -> Route:
        """The route with every weight zeroed: two routes equal in this differ only in weights, which the
        runtime API changes without a reload."""
        return replace(self, backends=tuple(replace(b, weight=0) for b in self.backends))


def revision_of_server(server: str) -> int | None:
    """The revision in a backend name ``r<revision>-<job>`` (None for HAProxy's ``<NOSRV>`` and others)."""
    head, sep, _ = server.partition("-")
    if not sep or not head.startswith("r") or not head[1:].isdigit():
        return None
    return int(head[1:])
