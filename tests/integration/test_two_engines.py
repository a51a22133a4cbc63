"""Two engines on one machine (scripts/second_engine.sh) as two nodes: independent backends."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from deepdock.compute.base import ContainerSpec, GpuStats
from deepdock.compute.docker import DockerBackend
from deepdock.compute.testing.conformance import wait_finished
from deepdock.errors import EngineUnreachableError

pytestmark = pytest.mark.docker

MIB = 1024**2
SECOND_ENGINE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "second_engine.sh"
# The second engine must be unreachable quickly once stopped; a short client timeout keeps it fast.
CLIENT_TIMEOUT_S = 5.0
SCRIPT_TIMEOUT_S = 90


def _spec(image: str, labels: dict[str, str], node: str, command: list[str]) -> ContainerSpec:
    return ContainerSpec(
        name=f"deepdock-two-{node}-{labels['deepdock.test']}",
        image=image,
        command=command,
        env={},
        labels={**labels, "deepdock.node": node},
        cpus=0.5,
        memory=64 * MIB,
        pids_limit=64,
        shm_size=8 * MIB,
    )


@pytest.fixture
def engines(second_engine):
    first = DockerBackend(timeout_s=CLIENT_TIMEOUT_S)
    second = DockerBackend(second_engine, timeout_s=CLIENT_TIMEOUT_S)
    yield first, second
    first.close()
    second.close()


def _script(action: str) -> None:
    subprocess.run(["bash", str(SECOND_ENGINE_SCRIPT), action], check=True, timeout=SCRIPT_TIMEOUT_S)


def test_containers_and_capacity_on_both(engines, busybox_image, labelled_cleanup):
    first, second = engines
    a = first.run(_spec(busybox_image, labelled_cleanup, "n1", ["sh", "-c", "echo on-one"]))
    b = second.run(_spec(busybox_image, labelled_cleanup, "n2", ["sh", "-c", "echo on-two"]))
    assert b"".join(first.logs(a, follow=True)) == b"on-one\n"
    assert b"".join(second.logs(b, follow=True)) == b"on-two\n"
    assert wait_finished(first, a).exit_code == 0 and wait_finished(second, b).exit_code == 0
    # Each engine only knows its own container: they are separate nodes.
    assert [s.id for s in first.list_containers(labelled_cleanup)] == [a]
    assert [s.id for s in second.list_containers(labelled_cleanup)] == [b]
    for backend in (first, second):
        cap = backend.capacity()
        assert cap.cpus > 0 and cap.memory > 0 and cap.gpus == []
    second.remove(b)


def test_losing_the_second_engine_is_named_and_isolated(engines, busybox_image, labelled_cleanup):
    first, second = engines
    survivor = first.run(_spec(busybox_image, labelled_cleanup, "n1", ["sleep", "300"]))
    lost = second.run(_spec(busybox_image, labelled_cleanup, "n2", ["sleep", "300"]))
    _script("stop")
    try:
        for call in (second.ping, lambda: second.inspect(lost), lambda: second.list_containers({})):
            with pytest.raises(EngineUnreachableError) as info:
                call()
            assert second.engine_url in info.value.message
        first.ping()
        assert first.inspect(survivor).running
        t0 = time.monotonic()
        first.stop(survivor, grace_s=1)
        assert time.monotonic() - t0 < 30
    finally:
        _script("start")
    # After the engine comes back, the container of the lost node is still there, finished, for the
    # server to find by its labels (no restart policy: nothing restarts behind the server's back).
    states = second.list_containers(labelled_cleanup)
    assert [s.id for s in states] == [lost]
    assert states[0].finished
    second.remove(lost)


def test_gpu_probe_on_an_engine_with_an_nvidia_runtime_but_no_driver(second_engine, busybox_image, caplog):
    # The second engine has Docker's nvidia device driver (its fake NVIDIA hook is on dockerd's PATH) but no
    # GPU driver loaded: the hook fails the probe as the real one does, so discovery reports zero GPUs,
    # says why, and leaves no probe container behind.
    backend = DockerBackend(second_engine, timeout_s=CLIENT_TIMEOUT_S, probe_image=busybox_image)
    assert "nvidia" in backend._api.info()["Runtimes"]
    with caplog.at_level("WARNING"):
        assert backend.capacity().gpus == []
    assert "GPU probe" in caplog.text and busybox_image in caplog.text and "driver not loaded" in caplog.text
    assert backend.gpu_stats() == []  # no GPUs: no probe at all
    assert backend._api.containers(all=True, filters={"label": "deepdock.probe"}) == []
    backend.close()


def test_gpus_are_discovered_sampled_and_given_to_a_job_through_the_engines_device_requests(
        fake_gpus, second_engine, busybox_image, labelled_cleanup):
    backend = DockerBackend(second_engine, timeout_s=CLIENT_TIMEOUT_S, probe_image=busybox_image)
    assert [(g.index, g.uuid, g.model, g.memory) for g in backend.capacity().gpus] == [
        (0, "GPU-fake-0", "NVIDIA H100 80GB HBM3", 81559 * MIB),
        (1, "GPU-fake-1", "NVIDIA H100 80GB HBM3", 81559 * MIB),
    ]
    busy, idle = backend.gpu_stats()
    assert busy == GpuStats(0, "GPU-fake-0", utilization_percent=97.0, memory_used=61440 * MIB,
                            memory_total=81559 * MIB, temperature_c=64.0, power_w=512.32)
    assert (idle.utilization_percent, idle.memory_used) == (0.0, 4 * MIB)
    # Every sample asks the tools again (capacity is cached; readings are not), and a reading the device
    # does not give (MIG: "[N/A]") comes back as None.
    fake_gpus(["0, GPU-fake-0, NVIDIA H100 80GB HBM3, 81559, 100, [N/A], 40, [N/A]",
               "1, GPU-fake-1, NVIDIA H100 80GB HBM3, 81559, 2048, 55, 50, 300.00"])
    first, second = backend.gpu_stats()
    assert (first.utilization_percent, first.memory_used, first.power_w) == (None, 100 * MIB, None)
    assert (second.utilization_percent, second.memory_used) == (55.0, 2048 * MIB)
    # A job's container placed on GPU 1 sees GPU 1 only (the device request names it; the hook honours it).
    spec = _spec(busybox_image, labelled_cleanup, "gpu", ["nvidia-smi", "--query-gpu=index,uuid",
                                                          "--format=csv,noheader"])
    job = backend.run(replace(spec, gpu_indices=[1]))
    assert wait_finished(backend, job).exit_code == 0
    assert b"".join(backend.logs(job)) == b"1, GPU-fake-1\n"
    # Probes leave nothing behind.
    assert backend._api.containers(all=True, filters={"label": "deepdock.probe"}) == []
    backend.close()
