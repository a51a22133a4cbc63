"""User-facing spec models. No I/O beyond reading the files they are loaded from."""

from deepdock.specs.env import EnvSpec, FrameworkSpec, load_env_spec
from deepdock.specs.job import JobSpec, ResourcesSpec, RetrySpec, VolumeSpec, load_job_spec

__all__ = [
    "EnvSpec", "FrameworkSpec", "JobSpec", "ResourcesSpec", "RetrySpec", "VolumeSpec",
    "load_env_spec", "load_job_spec",
]
