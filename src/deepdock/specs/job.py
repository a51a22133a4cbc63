"""The job spec: what to run, with which environment, on how much hardware."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from deepdock.specs.checks import (
    MAX_DURATION_S,
    MAX_SIZE_BYTES,
    MAX_STOP_GRACE_S,
    VOLUME_NAME_RE,
    check_command,
    check_container_path,
    check_env,
    check_host_path,
    check_image_reference,
    check_text,
)
from deepdock.specs.common import StrictModel, load_yaml, parse_bytes, parse_duration, parse_model
from deepdock.specs.env import EnvSpec, load_env_spec

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,62})$")
MAX_REPLICAS = 1024


class ResourcesSpec(StrictModel):
    """Per-replica resources. ``gpus`` below 1 (e.g. 0.25) is a share of one device."""

    cpus: float = Field(1.0, gt=0, le=1024)
    memory: int = Field(2 * 1024**3, le=MAX_SIZE_BYTES, description="bytes; YAML accepts '4g', '512m'")
    gpus: float = Field(0, ge=0, le=64)
    gpu_type: str | None = Field(None, max_length=128)
    # The least memory each GPU given to the job must have (bytes; YAML accepts '40g'): smaller ones are
    # never chosen. For a share (gpus < 1) it is the device's memory, not the share's.
    gpu_memory: int | None = Field(None, le=MAX_SIZE_BYTES)
    shm_size: int = Field(64 * 1024**2, le=MAX_SIZE_BYTES)
    pids: int = Field(4096, ge=16, le=1_000_000)

    @field_validator("memory", "shm_size", "gpu_memory", mode="before")
    @classmethod
    def _sizes(cls, v: object) -> object:
        return None if v is None else parse_bytes(v)  # type: ignore[arg-type]

    @field_validator("memory")
    @classmethod
    def _memory_floor(cls, v: int) -> int:
        if v < 6 * 1024**2:
            raise ValueError("memory must be at least 6m (docker's minimum)")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpu_shape(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("more than one GPU must be a whole number; fractions are for a share of one GPU")
        return v

    @field_validator("gpu_memory")
    @classmethod
    def _gpu_memory_positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("gpu_memory must be positive (e.g. '40g')")
        return v

    @model_validator(mode="after")
    def _gpu_memory_needs_gpus(self) -> ResourcesSpec:
        if self.gpu_memory is not None and self.gpus == 0:
            raise ValueError("gpu_memory is the least memory of each GPU the job gets, but it asks for none; "
                             "set gpus too, or drop gpu_memory")
        return self


class VolumeSpec(StrictModel):
    """A bind mount of a host path (allowed per project by an admin: server/services/host_access.py) or a
    named volume of the job's project (created and labelled by deepdock, never shared across projects)."""

    source: str = Field(description="absolute host path (bind) or the name of one of the project's volumes")
    target: str
    read_only: bool = True

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("/"):
            return check_host_path(v)
        if not VOLUME_NAME_RE.match(v):
            raise ValueError(f"{v!r} is neither an absolute host path nor a volume name (1-63 of a-z, 0-9, "
                             "'_', '.', '-')")
        return v

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, v: str) -> str:
        return check_container_path(v, "target")

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


RetryOn = Literal["failed", "node_lost", "oom"]
# How the replicas of a job reach each other (docs/distributed.md):
#   none     no network at all (the default of a single-replica job);
#   private  a network of the job's own on one node: every replica on the same node;
#   host     the nodes' own network, so replicas on several nodes reach each other over the nodes'
#            addresses; an admin's grant per project (it also reaches the node's own services);
#   auto     none for one replica; for a gang, private when it lands on one node, host when it spans
#            several (only for a project granted host networking; otherwise the gang stays on one node).
NetworkMode = Literal["auto", "none", "private", "host"]


class RetrySpec(StrictModel):
    max_retries: int = Field(0, ge=0, le=100)
    # Which failures are retried: the job's own non-zero exit, or the loss of its node.
    on: list[RetryOn] = Field(default_factory=lambda: list[RetryOn](["node_lost"]))


class JobSpec(StrictModel):
    name: str
    # Exactly one of: an inline env spec, a path to one (relative to the job file), or an image.
    environment: EnvSpec | str | None = None
    image: str | None = None
    command: list[str]
    workdir: str = "/workspace"
    # Folder packaged by the CLI and placed at ``workdir``; relative to the job file.
    code: str | None = Field(None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    volumes: list[VolumeSpec] = Field(default_factory=list, max_length=64)
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    priority: int = Field(0, ge=-1000, le=1000)
    preemptible: bool = True
    project: str = Field("default", max_length=64)
    max_runtime: float | None = Field(None, gt=0, le=MAX_DURATION_S, description="seconds; YAML accepts '2h'")
    runtime_estimate: float | None = Field(None, ge=0, le=MAX_DURATION_S)
    # Names the batch (sweep, grid, folds) this job belongs to; without it the server groups jobs of one
    # user, project and shape submitted within a minute of each other (scheduler/cohort.py).
    cohort: str | None = None
    stop_grace: float | None = Field(None, ge=0, le=MAX_STOP_GRACE_S)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    network: NetworkMode = "auto"
    # Processes each replica runs (torchrun's --nproc-per-node, given as DEEPDOCK_NPROC_PER_NODE);
    # None: one per whole GPU of the replica, or one.
    processes_per_replica: int | None = Field(None, ge=1, le=256)
    # Opt-in: stop the attempt (as failed) when it writes no log line or metric for this long, the sign of
    # a collective that hangs after a peer died (seconds; YAML accepts '10m').
    progress_timeout: float | None = Field(None, ge=10, le=MAX_DURATION_S)
    # Container TCP ports published on the node (a host port the engine picks). Set only by the server for
    # a service's replicas: a job submitted with ports is refused (server/services/jobs.py says why).
    ports: list[int] = Field(default_factory=list, max_length=8)

    @field_validator("name", "cohort")
    @classmethod
    def _name(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError(f"{info.field_name} must be 1-63 chars of a-z, 0-9, '_', '.', '-' and start with a letter or digit")
        return v

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, v: object) -> object:
        if isinstance(v, str):
            return ["sh", "-c", v]
        return v

    @field_validator("command")
    @classmethod
    def _command_nonempty(cls, v: list[str]) -> list[str]:
        return check_command(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        return None if v is None else check_image_reference(v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env(v)

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        return check_container_path(v, "workdir")

    @field_validator("code")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        return None if v is None else check_text(v, "code", 4096)

    @model_validator(mode="after")
    def _mount_targets(self) -> JobSpec:
        targets = [v.target for v in self.volumes]
        if len(set(targets)) != len(targets):
            raise ValueError(f"two volumes share a target: {sorted(t for t in targets if targets.count(t) > 1)[0]}")
        if self.workdir in targets:
            raise ValueError(f"a volume's target is the workdir {self.workdir}, where the job's code goes; "
                             "mount it elsewhere (e.g. /data)")
        return self

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        bad = [p for p in v if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ports {bad} are not TCP ports (1-65535)")
        if len(set(v)) != len(v):
            raise ValueError("a port is listed twice")
        return v

    @model_validator(mode="after")
    def _ports_single(self) -> JobSpec:
        if self.ports and self.replicas != 1:
            raise ValueError("published ports are for a single-replica job")
        return self

    @model_validator(mode="after")
    def _processes_divide_gpus(self) -> JobSpec:
        procs, gpus = self.processes_per_replica, self.resources.gpus
        if procs is not None and gpus > 0:
            if gpus < 1 and procs > 1:
                raise ValueError(f"processes_per_replica {procs} cannot share a fraction ({gpus:g}) of one GPU; "
                                 "use 1, or whole GPUs")
            if gpus >= 1 and int(gpus) % procs:
                raise ValueError(f"resources.gpus {gpus:g} does not divide into processes_per_replica {procs}: "
                                 "each process needs the same number of whole GPUs")
        return self

    @field_validator("max_runtime", "runtime_estimate", "stop_grace", "progress_timeout", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else parse_duration(v)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _one_environment(self) -> JobSpec:
        if (self.environment is None) == (self.image is None):
            raise ValueError("give exactly one of 'environment' (an env spec or its file) or 'image'")
        return self


def load_job_spec(path: str | Path) -> JobSpec:
    """Load a job file; an ``environment`` given as a path is read and inlined, ``code`` made absolute."""
    path = Path(path)
    spec = parse_model(JobSpec, load_yaml(path), str(path))
    if isinstance(spec.environment, str):
        spec.environment = load_env_spec(path.parent / spec.environment)
    if spec.code is not None and not Path(spec.code).is_absolute():
        spec.code = str((path.parent / spec.code).resolve())
    return spec


def env_spec_of(spec: JobSpec) -> EnvSpec | None:
    env = spec.environment
    if isinstance(env, str):
        raise ValueError("environment path must be resolved with load_job_spec before submission")
    return env
