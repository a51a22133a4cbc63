"""The scheduler's vocabulary: cluster state in, decisions out. Plain dataclasses, no I/O.

The server loop and the simulator both build these objects and hand them to a ``Policy``; the policy
never reads a clock or a database of its own, so the same inputs always give the same decisions.

Units: ``memory`` in bytes; times in seconds; ``attained_gpu_s`` in GPU-seconds (seconds run × the
job's total GPUs; a job without GPUs counts one GPU-equivalent per replica, see ``gpu_time_rate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from deepdock.scheduler.history import AttainedHistory

# Float comparisons of shares and cpus tolerate this much rounding error.
EPSILON = 1e-9


@dataclass(slots=True, frozen=True)
class Resources:
    """Per-replica resources. ``gpus`` below 1 is a share of one GPU; above 1 it must be whole."""

    cpus: float
    memory: int
    gpus: float = 0.0

    @property
    def whole_gpus(self) -> int:
        """Whole devices one replica needs (0 for a fractional share)."""
        return int(self.gpus) if self.gpus >= 1 else 0

    @property
    def gpu_share(self) -> float:
        """The share of one device a fractional replica needs (0 when it needs whole devices or none)."""
        return self.gpus if 0 < self.gpus < 1 else 0.0

    def times(self, n: int) -> Resources:
        return Resources(self.cpus * n, self.memory * n, self.gpus * n)


@dataclass(slots=True)
class GPU:
    index: int
    type: str
    memory: int
    free_share: float = 1.0


@dataclass(slots=True)
class NodeState:
    """One engine's capacity; ``free_*`` are capacity minus allocations (default: all free)."""

    name: str
    cpus: float
    memory: int
    gpus: list[GPU] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    free_cpus: float | None = None
    free_memory: int | None = None
    schedulable: bool = True

    def __post_init__(self) -> None:
        if self.free_cpus is None:
            self.free_cpus = self.cpus
        if self.free_memory is None:
            self.free_memory = self.memory


@dataclass(slots=True)
class ReplicaPlacement:
    node: str
    gpu_indices: list[int] = field(default_factory=list)
    # For a fractional request: the share taken of the single device in gpu_indices.
    gpu_share: float = 1.0


@dataclass(slots=True)
class JobRequest:
    id: str
    resources: Resources
    replicas: int = 1
    priority: int = 0
    project: str = "default"
    user: str = "default"
    submit_time: float = 0.0
    preemptible: bool = True
    gpu_type: str | None = None
    runtime_estimate: float | None = None
    attained_gpu_s: float = 0.0
    # Replicas of a service go to distinct nodes when possible (a gang is packed instead).
    spread: bool = False
    # Jobs of one group (the replicas of one service, each a job of its own) prefer nodes that hold no
    # other member: a preference, never a reason to wait.
    spread_group: str | None = None
    # All replicas on one node (a gang whose network cannot span nodes): never split, even when it fits
    # only split.
    one_node: bool = False
    # Seconds this job has already run in earlier attempts (oracle SRTF uses estimate - executed).
    executed: float = 0.0
    # When the job last stopped running (preempted); Tiresias-style starvation counts from here.
    last_stop_time: float | None = None
    # The batch it was submitted with (scheduler/cohort.py): finished members inform its ranking.
    cohort: str | None = None
    # The least memory (bytes) each of its GPUs must have: smaller GPUs are never chosen. None: any.
    gpu_memory: int | None = None


@dataclass(slots=True)
class RunningJob:
    id: str
    resources: Resources
    replicas: int
    placements: list[ReplicaPlacement]
    priority: int = 0
    project: str = "default"
    user: str = "default"
    preemptible: bool = True
    start_time: float = 0.0
    attained_gpu_s: float = 0.0
    gpu_type: str | None = None
    runtime_estimate: float | None = None
    # Total seconds run, this attempt included, as of the scheduling call.
    executed: float = 0.0
    submit_time: float = 0.0
    # Already told to stop (preempted); its resources are still held until it is gone.
    stopping: bool = False
    cohort: str | None = None
    spread_group: str | None = None


@dataclass(slots=True)
class ClusterState:
    nodes: list[NodeState]
    running: list[RunningJob] = field(default_factory=list)
    # Per-project guaranteed totals (not per replica). Idle capacity beyond them may be borrowed.
    quotas: dict[str, Resources] = field(default_factory=dict)
    # Optional: GPU time that finished jobs attained (the simulator fills it as jobs complete). The
    # default policy ranks by a Gittins index learned from it; None or too few samples: plain LAS.
    history: AttainedHistory | None = None


@dataclass(slots=True)
class PendingReason:
    code: str
    message: str
    position: int
    details: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class Place:
    job_id: str
    placements: list[ReplicaPlacement]


@dataclass(slots=True)
class Preempt:
    job_id: str
    victims: list[str]
    reason: str


@dataclass(slots=True)
class Wait:
    job_id: str
    reason: PendingReason


Decision = Place | Preempt | Wait

# Pending-reason codes (machine-readable; messages are for people).
INSUFFICIENT_RESOURCES = "insufficient_resources"
QUOTA_EXHAUSTED = "quota_exhausted"
GANG_RESERVATION = "gang_reservation"
BEHIND_HIGHER_PRIORITY = "behind_higher_priority"
GPU_TYPE_UNAVAILABLE = "gpu_type_unavailable"
GPU_MEMORY_UNAVAILABLE = "gpu_memory_unavailable"
PREEMPTING = "preempting"


class Policy(Protocol):
    name: str

    def schedule(
        self, state: ClusterState, queue: Sequence[JobRequest], now: float, *, explain: bool = True
    ) -> list[Decision]:
        """One decision per queued job (with ``explain=False`` only Place and Preempt are returned)."""
        ...


def gpu_time_rate(resources: Resources, replicas: int) -> float:
    """Attained GPU-seconds a job earns per second of running."""
    gpus = resources.gpus * replicas
    return gpus if gpus > 0 else float(replicas)
