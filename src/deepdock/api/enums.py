"""Statuses and reasons, shared by the DB models, the server, the wire models, the client and the CLI.

``StrEnum``: each member is its string, so the DB columns, the JSON on the wire and old rows keep the
same values, and a member compares equal to the plain string a client or a query carries.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES

    @property
    def active(self) -> bool:
        """Placed and holding resources (an attempt is open)."""
        return self in ACTIVE_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED})
ACTIVE_JOB_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.STARTING, JobStatus.RUNNING})


class AttemptStatus(StrEnum):
    """One placement of a job. The last four are how it ended."""

    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    PREEMPTED = "PREEMPTED"


class ReplicaStatus(StrEnum):
    """One container of an attempt: placed, running, exited (with a code), or gone without one."""

    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    LOST = "LOST"


class StopRequest(StrEnum):
    """Why a job's running attempt is being stopped (``jobs.stop_requested``)."""

    USER = "user"
    PREEMPTED = "preempted"
    RUNTIME = "runtime"
    # One replica of a gang ended: the others are stopped, since a gang runs all together or not at all.
    GANG = "gang"
    # No log line or metric for the job's progress_timeout: a collective hangs (a peer died mid-step).
    STALLED = "stalled"
    # A service replica's health check kept failing: it is restarted (a retry, with backoff).
    UNHEALTHY = "unhealthy"


class FailureReason(StrEnum):
    """The machine-readable class of a failure: the part of a status reason before the colon."""

    EXIT_CODE = "exit_code"
    OOM_KILLED = "oom_killed"
    NODE_LOST = "node_lost"
    IMAGE_MISSING = "image_missing"
    RUNTIME_EXCEEDED = "runtime_exceeded"
    START_FAILED = "start_failed"
    CONTAINER_LOST = "container_lost"
    NO_PROGRESS = "no_progress"
    UNHEALTHY = "unhealthy"


class AttemptNetwork(StrEnum):
    """How an attempt's replicas reach each other (the job spec's ``network`` once it is placed)."""

    NONE = "none"
    # A network of the attempt's own on its one node (no route anywhere else, not even to the node).
    PRIVATE = "private"
    # The nodes' own network: replicas on several nodes reach each other over the nodes' addresses.
    HOST = "host"
    # A network of the attempt's own that the node can reach, with the job's ports published on the node:
    # a service replica behind the gateway (only the server's own serving jobs get ports).
    PUBLISHED = "published"


class NodeHealth(StrEnum):
    """What the health step last saw. Whether the scheduler may place there is also the admin's
    decision (``draining``), kept apart so that a health change never undoes a drain."""

    READY = "ready"
    UNREACHABLE = "unreachable"


class NodeStatus(StrEnum):
    """A node as users see it: its health, or draining when an admin drained a healthy node."""

    READY = "ready"
    UNREACHABLE = "unreachable"
    DRAINING = "draining"


class CheckpointStatus(StrEnum):
    """A checkpoint the job announced: waiting to be copied out, in the artifact store, or gone."""

    PENDING = "pending"
    STORED = "stored"
    # The job removed it (a newer one replaced it) before the server could copy it.
    MISSING = "missing"
    # Older than the last N the platform keeps (settings.checkpoints_keep): removed from the store.
    PRUNED = "pruned"
    FAILED = "failed"


class AliasAction(StrEnum):
    SET = "set"
    ROLLBACK = "rollback"
    DELETE = "delete"


class ServiceStatus(StrEnum):
    """A service as its users see it (server/services/inference.py decides)."""

    # No replica is ready yet (first deployment, image being built, replicas starting).
    DEPLOYING = "deploying"
    READY = "ready"
    # A new revision is replacing the serving one (rolling, or canary steps).
    ROLLING_OUT = "rolling_out"
    # Fewer ready replicas than wanted, and no rollout explains it.
    DEGRADED = "degraded"
    # Nothing can serve: the only revision failed (build, or its replicas never became ready).
    FAILED = "failed"


class RevisionStatus(StrEnum):
    BUILDING = "building"
    # Built; replicas are being created (rolling update) or it is a canary at some traffic share.
    ROLLING = "rolling"
    CANARY = "canary"
    SERVING = "serving"
    # Replaced by a later revision that rolled out.
    RETIRED = "retired"
    # Its rollout failed (build error, replicas never ready, SLO breach): the previous one kept serving.
    FAILED = "failed"
    # Taken back by `service rollback` or an alias rolled back.
    ROLLED_BACK = "rolled_back"


class ServiceEventKind(StrEnum):
    APPLIED = "applied"
    BUILT = "built"
    SCALED = "scaled"
    CANARY_STEP = "canary_step"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REPLICA = "replica"
