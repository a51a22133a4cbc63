"""Pure scheduling policy: ClusterState + queue + now → decisions (place / preempt / wait with a reason).

No I/O and no clock: the server loop and the simulator drive the same objects.
"""

from deepdock.scheduler.capacity import Allocator
from deepdock.scheduler.fit import can_ever_fit, fits_now
from deepdock.scheduler.history import AttainedHistory
from deepdock.scheduler.policies import POLICIES, get_policy
from deepdock.scheduler.queue_policy import QueuePolicy
from deepdock.scheduler.types import (
    GPU,
    ClusterState,
    Decision,
    JobRequest,
    NodeState,
    PendingReason,
    Place,
    Policy,
    Preempt,
    ReplicaPlacement,
    Resources,
    RunningJob,
    Wait,
    gpu_time_rate,
)

__all__ = [
    "GPU", "POLICIES", "Allocator", "AttainedHistory", "ClusterState", "Decision", "JobRequest", "NodeState",
    "PendingReason", "Place", "Policy", "Preempt", "QueuePolicy", "ReplicaPlacement", "Resources", "RunningJob",
    "Wait",
    "can_ever_fit", "fits_now", "get_policy", "gpu_time_rate",
]
