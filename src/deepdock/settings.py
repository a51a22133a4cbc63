"""All settings in one object, read from ``DEEPDOCK_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WHEEL_PORT = 47811  # = envs.wheelserver.DEFAULT_PORT
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"  # = envs.base.DEFAULT_DEBIAN_MIRROR


def _default_home() -> Path:
    return Path.home() / ".deepdock"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEEPDOCK_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    # SQLAlchemy URL; empty means SQLite under ``home``.
    database_url: str = ""
    # Where the server listens and where the CLI finds it.
    host: str = "127.0.0.1"
    port: int = 8765
    server_url: str = ""
    token: str = ""
    # API worker processes of `deepdock server`; 0 = one per core, at most 4. With more than one, the
    # background loops run in the parent (control) process and the workers only answer requests.
    workers: int = 0
    # Engine of the first node registered on a fresh server ("" = docker's own defaults / DOCKER_HOST).
    docker_host: str = ""
    # pip index of PyTorch's CPU/CUDA wheels; "" disables it (then the host's pip config must provide them).
    pytorch_index_url: str = "https://download.pytorch.org/whl"
    # Background loop periods.
    # The scheduler runs when woken (submit, finish, node change) and at least this often, so that
    # time-based policy (aging, reservations) advances while nothing happens.
    scheduler_idle_period_s: float = 5.0
    reconcile_interval_s: float = 0.5
    # Pings are cheap; a short period is what makes a node that stops answering stop receiving
    # placements within seconds (background/node_health.py).
    node_health_interval_s: float = 2.0
    stop_grace_s: float = 30.0
    # A retried job waits this long after its first failure, twice as long after each next one, at most
    # retry_backoff_max_s (services/attempts.py Backoff).
    retry_backoff_s: float = Field(default=10.0, ge=0)
    retry_backoff_max_s: float = Field(default=300.0, ge=0)
    max_code_bytes: int = 64 * 1024 * 1024
    # Every other request body (server/body_limit.py). These are JSON specs and admin calls: a few KiB,
    # well under 1 MiB even at the spec checks' caps on env and command; and a JSON body costs several
    # times its size in memory once parsed, so a larger one is refused with 413 while it is still read.
    max_request_bytes: int = 1 * 1024 * 1024
    scheduler_policy: str = "default"
    # Put on every container the server creates, beside its own deepdock.* labels (for example a cost
    # centre; the integration tests use it to find and clean up what they made). JSON in the env var.
    container_labels: dict[str, str] = Field(default_factory=dict)
    # Env builds: the loopback port the wheel server listens on while a build fetches its wheels (fixed,
    # because build args are part of the classic builder's cache key; empty = the default).
    wheel_port: int = Field(default=DEFAULT_WHEEL_PORT, ge=1, le=65535)
    # Env builds: the Debian mirror debootstrap installs an offline python base from.
    debian_mirror: str = DEFAULT_DEBIAN_MIRROR
    # Where artifacts, checkpoints and model files live: "" = the folder ``home/artifacts``; ``file:///path``;
    # or ``s3://bucket[/prefix]`` on any S3-compatible server (``s3_endpoint_url``; credentials from the
    # standard AWS_* variables). deepdock.artifacts.
    artifact_store: str = ""
    s3_endpoint_url: str = ""
    # Checkpoints kept per job in the artifact store (older ones are removed as new ones arrive).
    checkpoints_keep: int = Field(default=3, ge=1)
    # The track step (metrics from running jobs): a point is queryable within about this period plus the
    # log stream's own delay.
    tracking_interval_s: float = Field(default=0.25, gt=0)
    # The usage step: a CPU/memory sample of every running container (an engine's stats call takes ~1 s).
    usage_interval_s: float = Field(default=10.0, gt=0)
    # The image GPU nodes run nvidia-smi in (capacity, and each usage round's GPU readings): any glibc image
    # present on every GPU node, e.g. a CUDA or Debian image. Empty: each node picks one of its own images
    # (compute/docker/gpus.py, PROBE_IMAGE_HINTS).
    gpu_probe_image: str = ""
    # The Philly trace folder (philly.csv, vcs.csv) for `deepdock sim --trace philly` and the benchmarks;
    # unset: ../shared/traces/philly beside the repository.
    philly_dir: Path | None = None
    # Services: the gateway (HAProxy, deepdock.gateway) the controller runs, where users call
    # /services/NAME/...; port 0 runs no gateway (services still deploy; nothing routes to them).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8780, ge=0, le=65535)
    # The address users reach the gateway at, for `service ls` (default http://gateway_host:gateway_port).
    gateway_url: str = ""
    haproxy_bin: str = "haproxy"
    # HAProxy threads (nbthread): 1 adds the least latency; more only for thousands of requests a second.
    gateway_threads: int = Field(default=1, ge=1, le=64)
    # HAProxy's Prometheus exporter (per-service and per-replica request metrics) on gateway_host:PORT/metrics;
    # 0: none.
    gateway_metrics_port: int = Field(default=8781, ge=0, le=65535)
    # The rollout step (builds, readiness probes, traffic weights, canary judgement, autoscaling).
    rollout_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("wheel_port", mode="before")
    @classmethod
    def _blank_port(cls, v: object) -> object:
        return DEFAULT_WHEEL_PORT if isinstance(v, str) and not v.strip() else v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'deepdock.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def url(self) -> str:
        return self.server_url or f"http://{self.host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return self.gateway_url or f"http://{self.gateway_host}:{self.gateway_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
