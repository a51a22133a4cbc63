"""Two engines on one machine (scripts/second_engine.sh) as two nodes: independent backends."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from deepdock.compute.base import ContainerSpec
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


def test_gpu_probe_on_an_engine_with_an_nvidia_runtime(second_engine, busybox_image, caplog, monkeypatch):
    # The second engine lists an "nvidia" runtime but has no NVIDIA driver: the real probe fails and
    # discovery must fall back to zero GPUs, say why, and leave no probe container behind.
    backend = DockerBackend(second_engine, timeout_s=CLIENT_TIMEOUT_S, probe_image=busybox_image)
    assert "nvidia" in backend._api.info()["Runtimes"]
    with caplog.at_level("WARNING"):
        assert backend.capacity().gpus == []
    assert "GPU probe" in caplog.text and busybox_image in caplog.text
    assert backend._api.containers(all=True, filters={"label": "deepdock.probe"}) == []
    # With a probe that answers (what nvidia-smi prints on a 2-GPU node), capacity carries the GPUs.
    sample = "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559\n1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559\n"
    fresh = DockerBackend(second_engine, timeout_s=CLIENT_TIMEOUT_S, probe_image=busybox_image)
    monkeypatch.setattr(fresh, "_run_probe", lambda image: sample)
    gpus = fresh.capacity().gpus
    assert [(g.index, g.uuid, g.memory) for g in gpus] == [
        (0, "GPU-aaaa", 81559 * MIB),
        (1, "GPU-bbbb", 81559 * MIB),
    ]
    # Cached for the TTL: a second call does not probe again.
    monkeypatch.setattr(fresh, "_run_probe", lambda image: "")
    assert len(fresh.capacity().gpus) == 2
    backend.close()
    fresh.close()
