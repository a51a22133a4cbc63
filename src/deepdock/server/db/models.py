"""All SQLAlchemy models in one module (dstack's convention): the desired state of the platform."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from deepdock.api.enums import AttemptStatus, JobStatus, NodeHealth, ReplicaStatus


def now_s() -> float:
    return time.time()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # Guaranteed quota per project; NULL = no guarantee (may still borrow idle capacity).
    quota_cpus: Mapped[float | None] = mapped_column(Float, nullable=True)
    quota_memory: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_gpus: Mapped[float | None] = mapped_column(Float, nullable=True)
    # An admin's grant: the project's gangs may use the nodes' own network (to span nodes). It also
    # reaches the node's own services, so it is never the default (docs/security.md).
    host_network: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


class HostPathGrant(Base):
    """A host path prefix a project's jobs may bind-mount (read-only unless ``writable``): an admin's
    decision, since a bind mount is the host's file system (server/services/host_access.py)."""

    __tablename__ = "host_path_grants"
    __table_args__ = (UniqueConstraint("project_id", "prefix"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(4096))
    writable: Mapped[bool] = mapped_column(Boolean, default=False)
    granted_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "project_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16), default="member")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Only the SHA-256 of a token is stored; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    user: Mapped[User] = relationship(lazy="joined")


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    engine_url: Mapped[str] = mapped_column(String(512), default="")
    # The address other nodes reach this one at (given at `node add`, or the engine URL's host).
    address: Mapped[str] = mapped_column(String(255), default="")
    tls_ca: Mapped[str | None] = mapped_column(String(512), nullable=True)
    tls_cert: Mapped[str | None] = mapped_column(String(512), nullable=True)
    tls_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Health as the health step last saw it (NodeHealth); the admin's drain is kept apart in `draining`,
    # so that a node coming back never undoes a drain.
    status: Mapped[str] = mapped_column(String(16), default=NodeHealth.READY)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    cpus: Mapped[float] = mapped_column(Float, default=0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    gpus: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{index, uuid, model, memory}]
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    engine_version: Mapped[str] = mapped_column(String(64), default="")
    last_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    unreachable_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


class CodeBlob(Base):
    __tablename__ = "code_blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_project_created", "project_id", "created_at"),
        Index("ix_jobs_status_priority", "status", "priority", "submitted_at"),
        Index("ix_jobs_name", "name"),
        # `ps`-style listings: filter by status (and project), newest first, without a sort step.
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_project_status_created", "project_id", "status", "created_at"),
        Index("ix_jobs_name_created", "name", "created_at"),
        # The scheduler reads jobs finished since its last cycle (its service history).
        Index("ix_jobs_finished", "finished_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Image the job runs: given by the spec, or the content-addressed tag of its environment once built.
    image: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    cpus: Mapped[float] = mapped_column(Float)
    memory: Mapped[int] = mapped_column(BigInteger)
    gpus: Mapped[float] = mapped_column(Float, default=0)
    gpu_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=True)
    retries_left: Mapped[int] = mapped_column(Integer, default=0)
    # After a failure that is retried: not placed again before this time (exponential backoff).
    retry_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # GPU-seconds (or CPU-seconds for CPU jobs) of service attained over all attempts: 2D-LAS input.
    attained_gpu_s: Mapped[float] = mapped_column("attained_service", Float, default=0)
    # The batch it was submitted with (scheduler/cohort.py): its finished members inform the ranking.
    cohort: Mapped[str | None] = mapped_column(String(160), nullable=True)
    # `job rerun`: the job whose recorded spec, image and code this one repeats.
    rerun_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Jobs of one group (a service's replicas) are spread over nodes by the scheduler.
    spread_group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pending_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the user or the scheduler asked for; the reconciler makes it so.
    stop_requested: Mapped[str | None] = mapped_column(String(32), nullable=True)  # user | preempted | runtime
    # Optimistic lock (SQLAlchemy's version_id_col): every UPDATE of the row carries
    # `WHERE version = <read>` and bumps it, so a write based on a stale read fails (StaleDataError).
    version: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[float] = mapped_column(Float, default=now_s)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    updated_at: Mapped[float] = mapped_column(Float, default=now_s)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    project: Mapped[Project] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")
    __mapper_args__ = {"version_id_col": version}


class Attempt(Base):
    """One placement of a job: its replicas (a gang) on nodes."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=AttemptStatus.SCHEDULED)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # What ran, as the engine saw it at start: lineage of any model this attempt produced.
    image: Mapped[str | None] = mapped_column(String(256), nullable=True)
    image_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    env_lock: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # How its replicas reach each other (AttemptNetwork), and the rendezvous port on host networking
    # (unique among open attempts, so two gangs on the same nodes never collide).
    network: Mapped[str] = mapped_column(String(16), default="none")
    master_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    replicas: Mapped[list[Replica]] = relationship(
        back_populates="attempt", lazy="selectin", order_by="Replica.rank", cascade="all, delete-orphan"
    )
    __mapper_args__ = {"version_id_col": version}


class Replica(Base):
    __tablename__ = "replicas"
    __table_args__ = (
        UniqueConstraint("attempt_id", "rank"),
        Index("ix_replicas_node_active", "node_name", "active"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    node_name: Mapped[str] = mapped_column(String(64))
    gpu_indices: Mapped[list[Any]] = mapped_column(JSON, default=list)
    gpu_share: Mapped[float] = mapped_column(Float, default=1.0)
    # True while the replica holds its resources (SCHEDULED..RUNNING): the allocation index.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    container_name: Mapped[str] = mapped_column(String(128))
    container_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=ReplicaStatus.SCHEDULED)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    oom_killed: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=0)
    # When container_id was written: a listing begun before it may not show the container yet, so only
    # a later listing can call it lost.
    recorded_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When the server signalled it to stop: an exit before that is the job's own outcome.
    stop_sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempt: Mapped[Attempt] = relationship(back_populates="replicas")
    __mapper_args__ = {"version_id_col": version}


class JobEvent(Base):
    """Every status transition, timestamped: the job's history as ``describe`` shows it."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float, default=now_s)


class Lease(Base):
    """Which server instance runs the background loops; a second instance waits for the lease."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)


# -- tracking (server/services/tracking.py) ---------------------------------------------------------------
class ReplicaUsage(Base):
    """The last usage sample of a running replica's container (background/usage.py). A table of its own,
    not columns of ``replicas``: the replica row carries an optimistic lock, and a sample every few
    seconds would make the steps that change replicas retry on stale reads."""

    __tablename__ = "replica_usage"
    replica_id: Mapped[int] = mapped_column(ForeignKey("replicas.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    node_name: Mapped[str] = mapped_column(String(64))
    # Of one CPU: 200.0 is two full CPUs.
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_usage: Mapped[int] = mapped_column(BigInteger)
    memory_limit: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[float] = mapped_column(Float)



class UsageSample(Base):
    """One usage sample of a job's container, kept ``USAGE_KEPT_S`` (background/usage.py): the history the
    dashboard's job and node pages chart. ``replica_usage`` keeps only the last sample (what /metrics
    exports); this keeps them all, rank by rank. Indexed by job (a job's chart) and by time (the nodes'
    chart reads the last hour; the usage step deletes what is older than a day, every round)."""

    __tablename__ = "usage_samples"
    __table_args__ = (Index("ix_usage_samples_job_at", "job_id", "at"), Index("ix_usage_samples_at", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    node_name: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_usage: Mapped[int] = mapped_column(BigInteger)
    memory_limit: Mapped[int] = mapped_column(BigInteger)

class GpuSample(Base):
    """One sample of one GPU of a node, from the node's NVIDIA tools (background/usage.py), kept
    ``USAGE_KEPT_S``. The newest round of a node is what /metrics and the nodes list show; the rest is the
    dashboard's GPU chart. Readings a device does not support are NULL. Indexed by node and time (the
    newest round of a node) and by time (the last hour, the daily retention delete)."""

    __tablename__ = "gpu_samples"
    __table_args__ = (Index("ix_gpu_samples_node_at", "node_name", "at"), Index("ix_gpu_samples_at", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_name: Mapped[str] = mapped_column(String(64))
    gpu_index: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(128), default="")
    at: Mapped[float] = mapped_column(Float)
    utilization_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memory_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    temperature_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    power_w: Mapped[float | None] = mapped_column(Float, nullable=True)


class MetricChunk(Base):
    """Up to ``CHUNK_POINTS`` consecutive points of one series (job, name, attempt, rank), as packed arrays.

    Why chunks and not a row per point: reading a 100,000-point series row by row costs ~100 ms in SQLite's
    own fetch alone (measured: 85-135 ms for the bare cursor), before any encoding; 98 chunks are read and
    unpacked with numpy in a few milliseconds. Ingest appends to a series' last chunk until it is full (a
    time-series database's head chunk), dropping a step not after the chunk's last one, so a point stored
    twice is impossible."""

    __tablename__ = "metric_chunks"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    # Little-endian int64 steps, float64 values, float64 epoch-second times.
    steps: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)
    times: Mapped[bytes] = mapped_column(LargeBinary)


class MetricLatest(Base):
    """The last point of each series of a job (its final metric), kept up to date by the ingest."""

    __tablename__ = "metric_latest"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class JobParam(Base):
    __tablename__ = "job_params"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer)


class DataRead(Base):
    """A read-only mount an attempt had, and the content hash its job computed of it (sdk/data.py)."""

    __tablename__ = "data_reads"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(4096), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    hashed_bytes: Mapped[int] = mapped_column(BigInteger)
    complete: Mapped[bool] = mapped_column(Boolean)


class TrackingCursor(Base):
    """How far the ingest has read one replica's output: committed with what it stored (exactly once)."""

    __tablename__ = "tracking_cursors"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "rank", "name"), Index("ix_checkpoints_job", "job_id", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # CheckpointStatus
    key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    stored_at: Mapped[float | None] = mapped_column(Float, nullable=True)


# -- model registry (server/services/registry.py) ---------------------------------------------------------
class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    project: Mapped[Project] = relationship(lazy="joined")


class ModelVersion(Base):
    """Immutable once made, except for the export formats added to it later."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # Lineage.
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    files: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{path, size, sha256}]
    prefix: Mapped[str] = mapped_column(String(512))  # artifact store key prefix of the files
    model_file: Mapped[str] = mapped_column(String(256), default="model.pt")
    formats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"onnx": {file, report...}}
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    version_lock: Mapped[int] = mapped_column(Integer, default=0)
    __mapper_args__ = {"version_id_col": version_lock}


class ModelAlias(Base):
    __tablename__ = "model_aliases"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[float] = mapped_column(Float, default=now_s)
    lock: Mapped[int] = mapped_column(Integer, default=0)
    __mapper_args__ = {"version_id_col": lock}


class AliasEvent(Base):
    """Append-only: every move of an alias, who made it and when (rollback reads it backwards)."""

    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_model_alias", "model_id", "alias", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(16))  # AliasAction
    by: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[float] = mapped_column(Float, default=now_s)


class ModelExport(Base):
    """An export job of a version (``model export``): when it is collected, its report and file join the
    version's formats."""

    __tablename__ = "model_exports"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | ok | failed
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


# -- services: a model version served by replicas (server/services/inference.py) --------------------------
# "Service" to users; in code an *inference service*, to keep the word away from the services/ layer.
class InferenceService(Base):
    __tablename__ = "inference_services"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Unique across projects: the name is the endpoint's URL segment (/services/NAME/).
    name: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # ServiceSpec as last applied
    created_by: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="deploying")  # ServiceStatus
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # Replicas wanted now: the spec's count, or what the autoscaler chose within its range.
    desired_replicas: Mapped[int] = mapped_column(Integer, default=1)
    scaled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The revision serving (None before the first rollout) and the one being rolled out to (== stable when
    # none is under way).
    stable_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A canary under way: its step (index into the spec's steps) and since when it has been judged.
    canary_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step_started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    updated_at: Mapped[float] = mapped_column(Float, default=now_s)
    lock: Mapped[int] = mapped_column(Integer, default=0)
    project: Mapped[Project] = relationship(lazy="joined")
    __mapper_args__ = {"version_id_col": lock}


class InferenceRevision(Base):
    __tablename__ = "inference_revisions"
    __table_args__ = (UniqueConstraint("service_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("inference_services.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)  # specs.service.revision_fields
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    image: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="building")  # RevisionStatus
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now_s)
    lock: Mapped[int] = mapped_column(Integer, default=0)
    __mapper_args__ = {"version_id_col": lock}


class InferenceReplica(Base):
    """A replica is a job of its own (placed, started, restarted and re-created by the job machinery);
    this row ties it to its service and revision and holds what the gateway needs."""

    __tablename__ = "inference_replicas"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("inference_services.id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    # Where the gateway reaches it (the node's address and the published port), once it runs.
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    container_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    ready_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    unready_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Taken out of traffic (weight 0) at this time; its job is stopped once it has drained.
    retiring_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Its HAProxy weight as last synced (0: no new requests).
    weight: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now_s)


class ServiceSample(Base):
    """A service's traffic over ``SAMPLE_EVERY_S``, measured at the gateway (all revisions when
    ``revision`` is None): what the dashboard charts. Kept ``SAMPLES_KEPT_S``."""

    __tablename__ = "service_samples"
    __table_args__ = (Index("ix_service_samples_service_at", "service_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("inference_services.id", ondelete="CASCADE"))
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    rps: Mapped[float] = mapped_column(Float)
    p50_ms: Mapped[float] = mapped_column(Float)
    p99_ms: Mapped[float] = mapped_column(Float)


class InferenceEvent(Base):
    """Append-only: what the rollout did and why (applied, canary steps with their measurements, promoted,
    rolled back with the breach that caused it)."""

    __tablename__ = "inference_events"
    __table_args__ = (Index("ix_inference_events_service", "service_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("inference_services.id", ondelete="CASCADE"))
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # ServiceEventKind
    message: Mapped[str] = mapped_column(Text, default="")
    by: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[float] = mapped_column(Float, default=now_s)
