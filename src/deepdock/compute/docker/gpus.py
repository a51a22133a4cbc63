"""NVIDIA GPU discovery on a node, done by the node's own engine.

The server may run far from the GPUs, so it cannot call nvidia-smi itself. When the engine lists an
``nvidia`` runtime, a short-lived probe container asks for every GPU (a device request with count -1
and the ``utility`` capability, which makes the NVIDIA toolkit mount nvidia-smi into it) and prints
one CSV line per device: what the node has (``NVIDIA_SMI_QUERY``, at capacity discovery) or what each
device is doing (``NVIDIA_SMI_STATS_QUERY``, each usage round). A one-shot probe rather than a
long-lived exporter container: nothing to adopt after a restart or to leak when a node is removed, for
~0.5 s of the engine per round on GPU nodes only. nvidia-smi is dynamically linked against glibc, so the probe image must be a
glibc image (debian, ubuntu, any CUDA image); it is configurable, else picked from images on the node.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from docker.types import DeviceRequest

from deepdock.compute.base import GpuInfo, GpuStats

log = logging.getLogger(__name__)

NVIDIA_RUNTIME = "nvidia"
NVIDIA_DRIVER = "nvidia"
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader,nounits",
]
# Field order matters: parse_gpu_stats reads the columns by position.
NVIDIA_SMI_STATS_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,uuid,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw",
    "--format=csv,noheader,nounits",
]
MIB = 1024**2
# A probe that does not answer in this time is treated as "no GPUs" (and logged).
PROBE_TIMEOUT_S = 60.0
PROBE_LABEL = "deepdock.probe"
# Preferred probe images when none is configured, best first: all ship glibc. Matched against repo tags.
# deepdock's own environment images are built on Debian, so a node that ran a job has one.
PROBE_IMAGE_HINTS = ("cuda", "pytorch", "nvidia", "ubuntu", "debian", "python", "deepdock/env")


def _csv_rows(output: str) -> Iterator[tuple[str, list[str]]]:
    """Each non-blank line of nvidia-smi's ``--format=csv,noheader`` output, with its fields."""
    for raw in output.splitlines():
        line = raw.strip()
        if line:
            yield line, [f.strip() for f in line.split(",")]


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Parse ``index, uuid, name, memory.total`` CSV lines (memory in MiB) into ``GpuInfo``s.

    A model name may itself contain commas, so index and uuid are taken from the front and memory
    from the back. Memory reported as ``[N/A]`` (some MIG/vGPU setups) becomes 0.
    """
    gpus: list[GpuInfo] = []
    for line, fields in _csv_rows(output):
        if len(fields) < 4:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        index, uuid, memory = fields[0], fields[1], fields[-1]
        model = ", ".join(fields[2:-1])
        memory_bytes = int(float(memory)) * MIB if memory.replace(".", "", 1).isdigit() else 0
        gpus.append(GpuInfo(index=int(index), uuid=uuid, model=model, memory=memory_bytes))
    return sorted(gpus, key=lambda g: g.index)


def _reading(value: str) -> float | None:
    """A number, or None for what nvidia-smi prints where a device has no such reading: ``[N/A]``,
    ``[Not Supported]``, ``[Unknown Error]`` (anything bracketed), or ``N/A``."""
    try:
        return float(value)
    except ValueError:
        return None


def parse_gpu_stats(output: str) -> list[GpuStats]:
    """Parse ``NVIDIA_SMI_STATS_QUERY`` lines (memory in MiB, power in W) into ``GpuStats``, by index."""
    stats: list[GpuStats] = []
    for line, fields in _csv_rows(output):
        if len(fields) != 7 or not fields[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        used, total = _reading(fields[3]), _reading(fields[4])
        stats.append(GpuStats(
            index=int(fields[0]), uuid=fields[1], utilization_percent=_reading(fields[2]),
            memory_used=None if used is None else int(used * MIB),
            memory_total=None if total is None else int(total * MIB),
            temperature_c=_reading(fields[5]), power_w=_reading(fields[6])))
    return sorted(stats, key=lambda g: g.index)


def choose_probe_image(repo_tags: Iterable[str]) -> str | None:
    """Pick the tag most likely to have glibc (see ``PROBE_IMAGE_HINTS``); None if none fits."""
    tags = [t for t in repo_tags if t and t != "<none>:<none>"]
    for hint in PROBE_IMAGE_HINTS:
        for tag in tags:
            if hint in tag.lower():
                return tag
    return None


def gpu_device_request(indices: list[int] | None, with_utility: bool = False) -> DeviceRequest:
    """The device request for given GPU indices (None = all GPUs)."""
    capabilities = ["gpu", "utility"] if with_utility else ["gpu"]
    if indices is None:
        return DeviceRequest(driver=NVIDIA_DRIVER, count=-1, capabilities=[capabilities])
    return DeviceRequest(driver=NVIDIA_DRIVER, device_ids=[str(i) for i in indices], capabilities=[capabilities])
