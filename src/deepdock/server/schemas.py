"""Request and response bodies of the REST API (separate from the DB models and the user specs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deepdock.specs.job import JobSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitJob(Strict):
    spec: JobSpec
    code_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class CodeOut(BaseModel):
    sha256: str
    size: int


class NodeIn(Strict):
    name: str
    engine_url: str = ""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class NodeStatusIn(Strict):
    status: str


class NodeOut(BaseModel):
    name: str
    engine_url: str
    status: str
    cpus: float
    memory: int
    gpus: list[dict[str, Any]]
    labels: dict[str, Any]
    engine_version: str
    allocated_cpus: float = 0
    allocated_memory: int = 0
    allocated_gpus: float = 0
    last_seen_at: float | None
    last_error: str


class ReplicaOut(BaseModel):
    rank: int
    node: str
    gpu_indices: list[int]
    gpu_share: float
    container_name: str
    container_id: str | None
    status: str
    exit_code: int | None
    oom_killed: bool
    started_at: float | None
    finished_at: float | None


class AttemptOut(BaseModel):
    number: int
    status: str
    reason: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    replicas: list[ReplicaOut]


class EventOut(BaseModel):
    at: float
    attempt: int | None
    from_status: str | None
    to_status: str
    reason: str


class JobOut(BaseModel):
    id: str
    name: str
    project: str
    user: str
    status: str
    status_reason: str
    image: str | None
    priority: int
    replicas: int
    cpus: float
    memory: int
    gpus: float
    attempts: int
    retries_left: int
    pending_reason: dict[str, Any] | None
    stop_requested: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None


class JobStatusOut(BaseModel):
    id: str
    status: str
    status_reason: str
    pending_reason: dict[str, Any] | None


class JobDetail(JobOut):
    # The batch the scheduler groups it with (scheduler/cohort.py), and the service it has attained.
    cohort: str | None
    attained_service: float
    spec: dict[str, Any]
    events: list[EventOut]
    attempt_list: list[AttemptOut]
    artifacts_dir: str


class UserIn(Strict):
    name: str
    is_admin: bool = False
    projects: list[str] = Field(default_factory=list)


class UserOut(BaseModel):
    name: str
    is_admin: bool
    token: str | None = None


class MemberIn(Strict):
    user: str
    role: str = "member"


class QuotaIn(Strict):
    cpus: float | None = None
    memory: int | None = None
    gpus: float | None = None


class ProjectOut(BaseModel):
    name: str
    quota_cpus: float | None
    quota_memory: int | None
    quota_gpus: float | None


class TokenOut(BaseModel):
    token: str
