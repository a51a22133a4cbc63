"""Request and response bodies of the REST API, shared by the server and the client.

Apart from the DB models and the user specs. Two rules keep old and new versions talking:

- requests (``Request``) are strict: an unknown field is a 422, so a typo never silently drops an option;
- responses (``Response``) ignore fields they do not know, so a newer server may add fields without
  breaking an older client, and a field a newer client expects has a default an older server's body fills.

Statuses are the enums of ``deepdock.api.enums``; being ``StrEnum`` members, they go on the wire as the
same strings as before and compare equal to them.

Imports only pydantic, ``deepdock.specs`` and ``deepdock.api.enums``: never the server.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deepdock.api.enums import (
    AttemptNetwork,
    AttemptStatus,
    JobStatus,
    NodeHealth,
    NodeStatus,
    ReplicaStatus,
    RevisionStatus,
    ServiceEventKind,
    ServiceStatus,
    StopRequest,
)
from deepdock.specs.checks import MAX_SIZE_BYTES
from deepdock.specs.job import JobSpec
from deepdock.specs.service import ServiceSpec

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class Request(BaseModel):
    """A body the client sends: unknown fields are rejected, and so are NaN and infinities."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Response(BaseModel):
    """A body the server sends: unknown fields (from a newer server) are ignored."""

    model_config = ConfigDict(extra="ignore")


# -- errors ------------------------------------------------------------------------------------------------
class ErrorBody(Response):
    code: str = Field(description="stable machine-readable code, e.g. invalid_spec, not_found, conflict")
    message: str
    details: Any = None


class ErrorOut(Response):
    """Every 4xx and 5xx answer of the API (``server.app`` maps ``DeepdockError`` and validation errors)."""

    error: ErrorBody


# -- code --------------------------------------------------------------------------------------------------
class CodeOut(Response):
    sha256: str
    size: int


# -- nodes -------------------------------------------------------------------------------------------------
class NodeIn(Request):
    # Lengths are the columns' (a longer value would be a database error, not a clear 422).
    name: str = Field(max_length=64)
    engine_url: str = Field("", max_length=512)
    tls_ca: str | None = Field(None, max_length=512)
    tls_cert: str | None = Field(None, max_length=512)
    tls_key: str | None = Field(None, max_length=512)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    # Where other nodes reach this one (a distributed job's ranks on host networking); empty: the engine
    # URL's host, or loopback for a local engine.
    address: str = Field("", max_length=255, pattern=r"^[A-Za-z0-9.:_-]*$")


class NodeStatusIn(Request):
    """``ready`` or ``draining`` (the admin's decision; health is the server's to observe)."""

    status: NodeStatus


class GpuHolder(Response):
    """A job holding (a share of) one GPU; ``job`` and ``project`` are empty for another project's job."""

    job: str
    project: str
    share: float


class GpuOut(Response):
    """One GPU of a node; ``memory`` in bytes; ``holders``: the jobs placed on it (the dashboard's map)."""

    index: int
    uuid: str = ""
    model: str
    memory: int
    holders: list[GpuHolder] = Field(default_factory=list)
    # The node's NVIDIA tools at the last usage round (None: no recent sample, or a reading the device
    # does not support, such as utilization under MIG). Memory in bytes, temperature in °C, power in W.
    utilization_percent: float | None = None
    memory_used: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    sampled_at: float | None = None


class NodeOut(Response):
    name: str
    engine_url: str
    address: str = ""
    # What users see: the health, or draining when an admin drained a healthy node.
    status: NodeStatus
    # The two facts behind ``status``. An older server sends only ``status``: both are derived from it.
    health: NodeHealth = NodeHealth.READY
    draining: bool = False
    cpus: float
    memory: int
    gpus: list[GpuOut]
    labels: dict[str, Any]
    engine_version: str
    allocated_cpus: float = 0
    allocated_memory: int = 0
    allocated_gpus: float = 0
    # The running containers' last usage samples (another project's job unnamed: ``job`` empty).
    usage: list[UsageOut] = Field(default_factory=list)
    last_seen_at: float | None
    last_error: str

    @model_validator(mode="before")
    @classmethod
    def _health_and_draining_from_status(cls, data: Any) -> Any:
        if not isinstance(data, dict) or ("health" in data and "draining" in data):
            return data
        status = str(data.get("status", ""))
        data = dict(data)
        data.setdefault("health", NodeHealth.UNREACHABLE if status == NodeStatus.UNREACHABLE else NodeHealth.READY)
        data.setdefault("draining", status == NodeStatus.DRAINING)
        return data


# -- jobs --------------------------------------------------------------------------------------------------
class SubmitJob(Request):
    spec: JobSpec
    code_sha256: str | None = Field(None, pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _environment_inlined(self) -> SubmitJob:
        # A string is a path on the machine that wrote the spec: the CLI reads and inlines it
        # (specs.job.load_job_spec). The server never opens a path a request names.
        if isinstance(self.spec.environment, str):
            raise ValueError("spec.environment must be an environment spec, not a string: the server does not "
                             "read files; `deepdock run -f JOB.yaml` inlines the file it names")
        if self.spec.environment is not None and self.spec.environment.requirements_file:
            raise ValueError("spec.environment.requirements_file names a file the server cannot read: put its "
                             "lines in pip (the CLI's load_env_spec does)")
        if self.spec.environment is not None and any(u.startswith("file:") for u in self.spec.environment.extra_index_urls):
            raise ValueError("spec.environment.extra_index_urls: a file:// index is a folder of the server; "
                             "use an http(s) index the server can reach")
        return self


class PendingReason(Response):
    """Why a queued job waits: what the scheduler wrote on its last cycle (scheduler/reasons.py).

    ``code`` is machine-readable (``insufficient_resources``, ``quota_exhausted``, ``preempting``...);
    ``position`` is the job's place in the queue (0 while its preempted victims stop); ``details`` carries
    the code's particulars (``victims`` for ``preempting``, ``nodes`` for a gang reservation...).
    """

    code: str
    message: str
    position: int
    details: dict[str, Any] = Field(default_factory=dict)


class ReplicaOut(Response):
    rank: int
    node: str
    # Where the other ranks reach this one: its node's address on host networking, its container's name
    # on a private network, empty without a network.
    address: str = ""
    gpu_indices: list[int]
    gpu_share: float
    container_name: str
    container_id: str | None
    status: ReplicaStatus
    exit_code: int | None
    oom_killed: bool
    started_at: float | None
    finished_at: float | None


class AttemptOut(Response):
    number: int
    status: AttemptStatus
    reason: str
    network: AttemptNetwork = AttemptNetwork.NONE
    master_port: int | None = None
    created_at: float
    started_at: float | None
    finished_at: float | None
    replicas: list[ReplicaOut]


class EventOut(Response):
    """One transition of a job (``from_status`` is None for the submission)."""

    at: float
    attempt: int | None
    from_status: JobStatus | None
    to_status: JobStatus
    reason: str


class JobOut(Response):
    id: str
    name: str
    project: str
    user: str
    status: JobStatus
    status_reason: str
    image: str | None
    priority: int
    replicas: int
    cpus: float
    memory: int
    gpus: float
    attempts: int
    retries_left: int
    pending_reason: PendingReason | None
    stop_requested: StopRequest | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    # Backing off after a failure: the next attempt is not placed before this time.
    retry_at: float | None = None


class JobStatusOut(Response):
    """The cheap read clients poll."""

    id: str
    status: JobStatus
    status_reason: str
    pending_reason: PendingReason | None


class UsageOut(Response):
    """The last CPU and memory sample of one running container (the usage step, every few seconds)."""

    job: str
    node: str
    cpu_percent: float  # of one CPU: 200 is two full CPUs
    memory_usage: int
    memory_limit: int
    at: float



class UsageSampleOut(Response):
    """One sample of a job's container (rank ``rank`` on ``node``), in the history the usage step keeps."""

    at: float
    rank: int
    node: str
    cpu_percent: float  # of one CPU: 200 is two full CPUs
    memory_usage: int
    memory_limit: int


class JobGpuOut(Response):
    """A GPU a running replica of the job holds, with the device's last reading from its node's NVIDIA
    tools (None: no recent reading, or one the device does not give)."""

    rank: int
    node: str
    index: int
    utilization_percent: float | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    sampled_at: float | None = None


class GpuSeriesOut(Response):
    """One GPU's readings over time from the history the usage step keeps (the dashboard's charts), as
    columns of equal length, oldest first; None where the device gave no reading. Columns, not a row per
    sample: an hour of 400 GPUs is 144,000 samples."""

    node: str
    index: int
    at: list[float]
    utilization_percent: list[float | None]
    memory_used: list[int | None]
    memory_total: int | None


class NodeUsageSampleOut(Response):
    """A node's containers summed at one usage round: what deepdock's jobs use of it, whoever's they are."""

    at: float
    node: str
    containers: int
    cpu_percent: float
    memory_usage: int

class JobDetail(JobOut):
    # The batch the scheduler groups it with (scheduler/cohort.py), and the GPU time it has attained.
    cohort: str | None
    attained_service: float
    spec: dict[str, Any]
    events: list[EventOut]
    attempt_list: list[AttemptOut]
    artifacts_dir: str
    code_sha256: str | None = None
    # `job rerun`: the job this one repeats.
    rerun_of: str | None = None
    # Its running containers' last usage samples, one per replica.
    usage: list[UsageOut] = Field(default_factory=list)
    # The GPUs its running replicas hold, each with the device's last reading (is the job using them?).
    held_gpus: list[JobGpuOut] = Field(default_factory=list)


# -- tenancy -----------------------------------------------------------------------------------------------
class UserIn(Request):
    name: str = Field(max_length=64)
    is_admin: bool = False
    projects: list[str] = Field(default_factory=list, max_length=1000)


class UserOut(Response):
    name: str
    is_admin: bool
    # Only in the answer to creating the user: it is shown once.
    token: str | None = None


class MemberIn(Request):
    user: str = Field(max_length=64)
    # Roles are recorded, not yet acted on: every member may submit; admin rights are the user's own flag.
    role: Literal["member", "admin"] = "member"


class QuotaIn(Request):
    """A project's guaranteed share; None clears one resource's guarantee. Bounded so that no quota
    overflows a BIGINT column or the scheduler's arithmetic."""

    cpus: float | None = Field(None, ge=0, le=1_000_000)
    memory: int | None = Field(None, ge=0, le=MAX_SIZE_BYTES * 1024)
    gpus: float | None = Field(None, ge=0, le=1_000_000)


class ProjectOut(Response):
    name: str
    quota_cpus: float | None
    quota_memory: int | None
    quota_gpus: float | None
    host_network: bool = False


class HostNetworkIn(Request):
    allowed: bool


class HostPathIn(Request):
    prefix: str = Field(max_length=4096, description="absolute host path; jobs may mount it or what lies below")
    writable: bool = False


class HostPathOut(Response):
    project: str
    prefix: str
    writable: bool
    granted_by: str = ""
    created_at: float | None = None


class VolumeOut(Response):
    """A named volume of a project on one node (``engine_name`` is what the engine calls it)."""

    name: str
    project: str
    node: str
    engine_name: str
    created_at: float | None = None


class VolumesOut(Response):
    volumes: list[VolumeOut]
    # Nodes that did not answer: their volumes are not in the list.
    unreachable_nodes: list[str] = Field(default_factory=list)


class TokenOut(Response):
    token: str


__all__ = [
    "SHA256_PATTERN",
    "AttemptOut",
    "CodeOut",
    "EventOut",
    "GpuOut",
    "JobDetail",
    "JobOut",
    "JobStatusOut",
    "MemberIn",
    "NodeIn",
    "NodeOut",
    "NodeStatusIn",
    "PendingReason",
    "ProjectOut",
    "QuotaIn",
    "ReplicaOut",
    "Request",
    "Response",
    "SubmitJob",
    "TokenOut",
    "UserIn",
    "UserOut",
]


# -- tracking ----------------------------------------------------------------------------------------------
class ArtifactOut(Response):
    path: str = Field(description="relative to the job: attempt-N/rank-R/<file> or checkpoints/<name>")
    size: int
    modified_at: float


class SeriesSummary(Response):
    """One metric of a job: its last (final) point and how many points it has."""

    name: str
    value: float
    step: int
    attempt: int
    count: int


class MetricsOut(Response):
    job: str
    series: list[SeriesSummary]


class SeriesOut(Response):
    """One series, column by column (compact on the wire: 100k points are four arrays, not 100k objects).
    ``downsampled``: ``max_points`` was smaller than ``total`` and the points are an LTTB selection."""

    job: str
    name: str
    total: int
    downsampled: bool
    steps: list[int]
    values: list[float]
    times: list[float]
    attempts: list[int]
    ranks: list[int]


class ParamsOut(Response):
    job: str
    params: dict[str, Any]


class RunSummary(Response):
    id: str
    name: str
    status: JobStatus
    params: dict[str, Any]
    metrics: dict[str, float]


class CheckpointOut(Response):
    name: str
    attempt: int
    rank: int
    step: int
    size: int
    sha256: str
    status: str
    created_at: float
    stored_at: float | None = None


# -- model registry ----------------------------------------------------------------------------------------
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_\-]{0,63}$"


class RegisterModelIn(Request):
    job: str = Field(max_length=64, description="the job (id or name) whose artifact is the model")
    path: str = Field(max_length=1024, description="the model file among the job's artifacts (`artifacts ls`)")
    example_input: str | None = Field(None, max_length=1024, description="an .npy artifact: the input signature")
    project: str | None = Field(None, max_length=64, description="default: the job's project")
    description: str = Field("", max_length=4096)


class AliasIn(Request):
    version: int = Field(ge=1)


class ExportIn(Request):
    format: Literal["torchscript", "onnx"]
    generated: int = Field(1000, ge=0, le=100_000, description="random inputs compared besides the example")


class FileOut(Response):
    path: str
    size: int
    sha256: str


class ModelVersionOut(Response):
    model: str
    project: str
    version: int
    job: str | None
    attempt: int | None
    lineage: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    signature: dict[str, Any] | None
    files: list[FileOut]
    formats: dict[str, Any]
    aliases: list[str]
    created_by: str
    created_at: float


class ModelOut(Response):
    name: str
    project: str
    description: str
    created_by: str
    created_at: float
    latest_version: int | None
    aliases: dict[str, int]


class ModelDetail(ModelOut):
    versions: list[ModelVersionOut]


class AliasEventOut(Response):
    alias: str
    action: str
    from_version: int | None
    to_version: int | None
    by: str
    at: float


class ExportOut(Response):
    model: str
    version: int
    format: str
    job: str


# -- services (a model version served by replicas) ---------------------------------------------------------
class ApplyServiceIn(Request):
    spec: ServiceSpec


class ScaleServiceIn(Request):
    """A fixed count, or an autoscaling range with one target (the others of the range kept as they are)."""

    replicas: int | None = Field(None, ge=0, le=64)
    min: int | None = Field(None, ge=1, le=64)
    max: int | None = Field(None, ge=1, le=64)
    target_concurrency: float | None = Field(None, gt=0)
    target_rps: float | None = Field(None, gt=0)


class UpdateServiceIn(Request):
    """Change what is served; every change of model, runtime, resources or batching is a new revision."""

    model: str | None = None
    runtime: Literal["onnx", "torchscript"] | None = None
    # Percent of traffic of the canary's first step (then 50% and all); 0 or None: a rolling update.
    canary: float | None = Field(None, ge=0, lt=100)
    cpus: float | None = Field(None, gt=0)
    memory: int | str | None = None
    max_batch_size: int | None = Field(None, ge=1, le=4096)
    max_wait_ms: float | None = Field(None, ge=0, le=1000)


class RevisionOut(Response):
    number: int
    model: str
    version: int
    runtime: str
    image: str | None
    status: RevisionStatus
    reason: str
    created_by: str
    created_at: float


class ServiceReplicaOut(Response):
    job: str
    revision: int
    status: JobStatus
    node: str | None
    address: str | None
    port: int | None
    ready: bool
    retiring: bool
    weight: int
    restarts: int
    # A replica not placed yet: the scheduler's "why pending" (the same as `deepdock describe JOB`).
    pending: str | None = None


class ServiceEventOut(Response):
    at: float
    revision: int | None
    kind: ServiceEventKind
    message: str
    by: str


class ServiceOut(Response):
    name: str
    project: str
    model: str
    status: ServiceStatus
    status_reason: str
    desired_replicas: int
    ready_replicas: int
    stable_revision: int | None
    target_revision: int | None
    # Percent of traffic per revision number (as the gateway splits it now).
    traffic: dict[int, float]
    endpoint: str
    created_at: float
    # The last traffic sample at the gateway (every 5 s; None before the first or without a gateway).
    rps: float | None = None
    p99_ms: float | None = None


class ServiceSampleOut(Response):
    """``revision`` None: the service as a whole."""

    at: float
    revision: int | None
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


class ServiceDetail(ServiceOut):
    spec: dict[str, Any]
    canary_step: int | None
    revisions: list[RevisionOut]
    replicas: list[ServiceReplicaOut]
    events: list[ServiceEventOut]


# -- the dashboard's overview --------------------------------------------------------------------------
class ProjectUsageOut(Response):
    """One project as the overview shows it: its jobs by status, its queue, what its running jobs hold
    against its quota (above the quota: capacity it borrows from idle projects)."""

    name: str
    jobs: dict[str, int]
    queued: int
    oldest_wait_s: float | None
    used_cpus: float
    used_memory: int
    used_gpus: float
    quota_cpus: float | None
    quota_memory: int | None
    quota_gpus: float | None
    # GPU-seconds (CPU-seconds for CPU jobs) its jobs attained: the fair-share standing the scheduler uses.
    attained_service: float


class CapacityOut(Response):
    nodes: int
    nodes_ready: int
    cpus: float
    memory: int
    gpus: int
    allocated_cpus: float
    allocated_memory: int
    allocated_gpus: float


class OverviewOut(Response):
    capacity: CapacityOut
    projects: list[ProjectUsageOut]
