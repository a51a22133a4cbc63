"""GPU discovery parsing, on samples in the exact format nvidia-smi prints for our query."""

from __future__ import annotations

import pytest

from deepdock.compute.base import GpuInfo, GpuStats
from deepdock.compute.docker.gpus import choose_probe_image, gpu_device_request, parse_gpu_stats, parse_nvidia_smi

MIB = 1024**2

# `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits` on an 8-GPU node.
H100_NODE = """\
0, GPU-3d5b1c2a-8f4e-6b1d-2c3a-9e8f7d6c5b4a, NVIDIA H100 80GB HBM3, 81559
1, GPU-7a6b5c4d-3e2f-1a0b-9c8d-7e6f5a4b3c2d, NVIDIA H100 80GB HBM3, 81559
"""
# Older cards and an "[N/A]" memory as reported under some vGPU setups; names with commas happen.
MIXED_NODE = """\
1, GPU-bbbb, Tesla V100-SXM2-16GB, 16160

0, GPU-aaaa, NVIDIA GeForce RTX 3090, 24576
2, GPU-cccc, GRID A100X-4C, rev 2, [N/A]
"""


def test_parses_h100_sample():
    gpus = parse_nvidia_smi(H100_NODE)
    assert gpus == [
        GpuInfo(0, "GPU-3d5b1c2a-8f4e-6b1d-2c3a-9e8f7d6c5b4a", "NVIDIA H100 80GB HBM3", 81559 * MIB),
        GpuInfo(1, "GPU-7a6b5c4d-3e2f-1a0b-9c8d-7e6f5a4b3c2d", "NVIDIA H100 80GB HBM3", 81559 * MIB),
    ]


def test_sorts_by_index_and_tolerates_blank_lines_commas_and_na():
    gpus = parse_nvidia_smi(MIXED_NODE)
    assert [g.index for g in gpus] == [0, 1, 2]
    assert gpus[1].model == "Tesla V100-SXM2-16GB" and gpus[1].memory == 16160 * MIB
    assert gpus[2].model == "GRID A100X-4C, rev 2" and gpus[2].memory == 0


def test_no_output_means_no_gpus_and_garbage_is_an_error():
    assert parse_nvidia_smi("") == []
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver")


def test_probe_image_choice_prefers_cuda_then_distros():
    tags = ["busybox:latest", "debian:12", "nvidia/cuda:12.4.1-base-ubuntu22.04", "<none>:<none>"]
    assert choose_probe_image(tags) == "nvidia/cuda:12.4.1-base-ubuntu22.04"
    assert choose_probe_image(["busybox:latest", "debian:12"]) == "debian:12"
    assert choose_probe_image(["busybox:latest", "<none>:<none>"]) is None


def test_device_requests_by_index_and_all():
    by_index = gpu_device_request([2, 3])
    assert by_index["Driver"] == "nvidia" and by_index["DeviceIDs"] == ["2", "3"]
    assert by_index["Capabilities"] == [["gpu"]]
    everything = gpu_device_request(None, with_utility=True)
    assert everything["Count"] == -1 and everything["Capabilities"] == [["gpu", "utility"]]


# `nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw
# --format=csv,noheader,nounits`: a busy and an idle H100, then a MIG-enabled A100 (no utilization or
# power reading: nvidia-smi prints "[N/A]" / "[Not Supported]" there).
STATS_NODE = """\
1, GPU-bbbb, 0, 4, 81559, 31, 69.75
0, GPU-aaaa, 97, 61440, 81559, 64, 512.32

2, GPU-cccc, [N/A], 12018, 40960, 38, [Not Supported]
"""


def test_parses_gpu_stats_by_index_with_missing_readings_as_none():
    stats = parse_gpu_stats(STATS_NODE)
    assert [s.index for s in stats] == [0, 1, 2]
    busy, idle, mig = stats
    assert busy == GpuStats(0, "GPU-aaaa", utilization_percent=97.0, memory_used=61440 * MIB,
                            memory_total=81559 * MIB, temperature_c=64.0, power_w=512.32)
    assert (idle.utilization_percent, idle.memory_used) == (0.0, 4 * MIB)
    assert (mig.utilization_percent, mig.power_w, mig.memory_used) == (None, None, 12018 * MIB)
    assert parse_gpu_stats("") == []


@pytest.mark.parametrize("line", ["0, GPU-aaaa, 97, 61440", "GPU 0: NVIDIA H100", "x, GPU-a, 1, 2, 3, 4, 5"])
def test_gpu_stats_of_another_shape_are_an_error(line):
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_gpu_stats(line)
