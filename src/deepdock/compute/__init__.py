"""Compute backends: one small protocol (``base.ComputeBackend``), optional abilities beside it
(``compute.abilities``), one backend per node (``compute.pool``), the workspace archive format
(``compute.workspace``), a Docker engine implementation (``compute.docker``) and an in-memory fake with
the conformance suite (``compute.testing``). See docs/compute.md."""

from deepdock.compute.abilities import (
    FileTransfer,
    ImageProvision,
    Networking,
    StatsSource,
    ability,
    copy_image,
)
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
    VolumeMount,
)
from deepdock.compute.pool import BackendPool, NodeConnection

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_JOB",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "BackendPool",
    "ComputeBackend",
    "ContainerSpec",
    "ContainerState",
    "ContainerStats",
    "FileTransfer",
    "GpuInfo",
    "ImageProvision",
    "Networking",
    "NodeCapacity",
    "NodeConnection",
    "StatsSource",
    "VolumeMount",
    "ability",
    "copy_image",
]
