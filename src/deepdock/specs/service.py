"""The service spec: a model version served by replicas behind one endpoint (docs/serving.md).

    name: digits
    model: digits-mlp@production      # or digits-mlp:3; an alias is followed when it moves (follow_alias)
    runtime: onnx                     # or torchscript; default: onnx when the version has an ONNX export
    resources: {cpus: 1, memory: 1g}  # per replica, as a job's
    replicas: 2                       # or autoscaling: {min: 1, max: 6, target_concurrency: 8}
    batching: {max_batch_size: 32, max_wait_ms: 2}
    rollout: {max_surge: 1, max_unavailable: 0, canary: {steps: [10, 50], interval: 30s},
              slo: {max_error_rate: 0.01, max_p99_ms: 250}}

What makes a new *revision* (and so a rollout) is what a replica runs: the model version, runtime,
resources and batching (``revision_fields``). Replica counts, autoscaling and the rollout policy apply to
the service as it is, without a rollout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from deepdock.specs.common import StrictModel, load_yaml, parse_duration, parse_model
from deepdock.specs.job import ResourcesSpec

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_MODEL_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(:[1-9][0-9]{0,8}|@[a-z0-9][a-z0-9_.-]{0,63})$")
RUNTIMES = ("onnx", "torchscript")
MAX_SERVICE_REPLICAS = 64


class BatchingSpec(StrictModel):
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_wait_ms: float = Field(2.0, ge=0, le=1000)


class AutoscalingSpec(StrictModel):
    """Replicas between ``min`` and ``max``, sized so each replica sees its target (one of the two)."""

    min: int = Field(1, ge=1, le=MAX_SERVICE_REPLICAS)
    max: int = Field(..., ge=1, le=MAX_SERVICE_REPLICAS)
    # In-flight requests per replica (Little's law on the proxy's log: rate x latency).
    target_concurrency: float | None = Field(None, gt=0, le=10_000)
    target_rps: float | None = Field(None, gt=0, le=1_000_000)
    # No scale-down sooner than this after the last change (seconds; '2m'), so load that wobbles does not
    # make replicas come and go; scale-up is immediate.
    cooldown: float = Field(60.0, ge=1, le=86400)
    window: float = Field(10.0, ge=1, le=600, description="seconds of traffic each decision looks at")

    @field_validator("cooldown", "window", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return parse_duration(v)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _one_target(self) -> AutoscalingSpec:
        if (self.target_concurrency is None) == (self.target_rps is None):
            raise ValueError("give exactly one of target_concurrency or target_rps")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class SloSpec(StrictModel):
    """What a canary must keep, measured at the proxy on the canary's own requests."""

    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_p99_ms: float = Field(500.0, gt=0, le=600_000)
    # A step is judged only once the canary has served this many requests in it (fewer say nothing).
    min_requests: int = Field(20, ge=1, le=1_000_000)


class CanarySpec(StrictModel):
    # Percent of traffic the new revision gets at each step, before it takes all of it.
    steps: list[float] = Field(default_factory=lambda: [10.0, 50.0], min_length=1, max_length=10)
    interval: float = Field(30.0, ge=1, le=86400, description="seconds each step holds before it is judged")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < s < 100 for s in v) or v != sorted(v) or len(set(v)) != len(v):
            raise ValueError("canary steps are increasing percentages between 0 and 100 (e.g. [10, 50])")
        return v

    @field_validator("interval", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v)  # type: ignore[arg-type]


class RolloutSpec(StrictModel):
    max_surge: int = Field(1, ge=0, le=MAX_SERVICE_REPLICAS)
    max_unavailable: int = Field(0, ge=0, le=MAX_SERVICE_REPLICAS)
    canary: CanarySpec | None = None
    slo: SloSpec = Field(default_factory=SloSpec)
    # A new replica not ready within this long fails the rollout (the previous revision keeps serving).
    ready_timeout: float = Field(300.0, ge=5, le=86400)

    @field_validator("ready_timeout", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _progress(self) -> RolloutSpec:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: a rolling update could never move")
        return self


class ServiceSpec(StrictModel):
    name: str
    project: str = Field("default", max_length=64)
    model: str
    # For ``name@alias``: roll out when the alias moves (and back when it is rolled back).
    follow_alias: bool = True
    runtime: str | None = None
    resources: ResourcesSpec = Field(default_factory=lambda: ResourcesSpec(cpus=1.0, memory=1024**3))
    replicas: int = Field(1, ge=0, le=MAX_SERVICE_REPLICAS)
    autoscaling: AutoscalingSpec | None = None
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    priority: int = Field(0, ge=-1000, le=1000)
    # Replicas are not preempted unless asked: a service is not a batch job.
    preemptible: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("a service name is 1-40 chars of a-z, 0-9 and '-', starting and ending with a letter "
                             "or digit (it is a URL segment: /services/NAME/)")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not _MODEL_REF_RE.match(v):
            raise ValueError(f"{v!r} is not NAME:VERSION or NAME@ALIAS")
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: str | None) -> str | None:
        if v is not None and v not in RUNTIMES:
            raise ValueError(f"unknown runtime {v!r}; one of {', '.join(RUNTIMES)}")
        return v

    @property
    def model_name(self) -> str:
        return re.split(r"[:@]", self.model, maxsplit=1)[0]

    @property
    def alias(self) -> str | None:
        return self.model.split("@", 1)[1] if "@" in self.model else None

    @property
    def pinned_version(self) -> int | None:
        return int(self.model.rsplit(":", 1)[1]) if ":" in self.model else None


def load_service_spec(path: str | Path) -> ServiceSpec:
    path = Path(path)
    return parse_model(ServiceSpec, load_yaml(path), str(path))


def revision_fields(spec: ServiceSpec, version: int, runtime: str) -> dict[str, Any]:
    """What a replica runs: equal fields, the same revision."""
    return {"model": spec.model_name, "version": version, "runtime": runtime,
            "resources": spec.resources.model_dump(mode="json"), "batching": spec.batching.model_dump(mode="json")}
