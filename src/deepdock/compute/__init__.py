"""Compute backends: one small protocol (``base.ComputeBackend``), a Docker engine implementation
(``compute.docker``) and an in-memory fake for logic tests (``compute.fake``). See docs/compute.md."""

from deepdock.compute.base import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_NODE,
    ComputeBackend,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    GpuInfo,
    NodeCapacity,
    StatsSource,
    VolumeMount,
)

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_JOB",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "ComputeBackend",
    "ContainerSpec",
    "ContainerState",
    "ContainerStats",
    "GpuInfo",
    "NodeCapacity",
    "StatsSource",
    "VolumeMount",
]
