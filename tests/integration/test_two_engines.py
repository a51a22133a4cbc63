"""Two engines on one machine (scripts/second_engine.sh) as two nodes: independent backends."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from deepdock.compute.base import ContainerSpec
from deepdock.compute.conformance import wait_finished
from deepdock.compute.docker import DockerBackend
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
