"""The contract every ``ComputeBackend`` must obey, as a reusable pytest suite.

A backend's test module subclasses ``BackendContract`` (its name does not start with ``Test``, so it
is not collected on its own) and provides a ``harness`` fixture: a ``ContractHarness`` that knows how to
make that backend's containers print, exit and ignore SIGTERM. The fake runs it in tests/compute in
milliseconds; the Docker backend runs the very same tests in tests/integration against a real engine.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace

import pytest

from deepdock.compute.base import (
    EXIT_CODE_SIGKILL,
    EXIT_CODE_SIGTERM,
    STATUS_RUNNING,
    ComputeBackend,
    ContainerSpec,
    ContainerState,
)
from deepdock.errors import ConflictError, EngineUnreachableError, ImageMissingError, NotFoundError

# Generous bounds for real engines; the fake finishes instantly.
FINISH_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
STOP_GRACE_S = 2.0
# Slack for engine and clock granularity when comparing times (docker stop takes whole seconds).
TIME_SLACK_S = 0.5
MIB = 1024**2
MISSING_IMAGE = "deepdock-contract-missing-image:does-not-exist"


class ContractHarness(ABC):
    """How to drive one backend through the contract."""

    backend: ComputeBackend
    image: str
    labels: dict[str, str]

    def spec(self, command: list[str], **overrides: object) -> ContainerSpec:
        base = ContainerSpec(
            name=f"deepdock-contract-{uuid.uuid4().hex[:12]}",
            image=self.image,
            command=command,
            env={},
            labels=dict(self.labels),
            cpus=0.5,
            memory=64 * MIB,
            pids_limit=64,
            shm_size=8 * MIB,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @abstractmethod
    def now(self) -> float:
        """The backend's idea of the current time (epoch seconds)."""

    @abstractmethod
    def run_exiting(self, output: str, exit_code: int, **overrides: object) -> str:
        """Start a container that prints ``output`` and exits with ``exit_code``; return its id."""

    @abstractmethod
    def run_long(self, **overrides: object) -> str:
        """Start a container that runs until stopped and dies of SIGTERM."""

    @abstractmethod
    def run_ignoring_sigterm(self) -> str:
        """Start a container whose process ignores SIGTERM (so only SIGKILL ends it)."""

    @abstractmethod
    def run_streaming(self, lines: list[str], interval_s: float) -> str:
        """Start a container that prints ``lines`` one by one, ``interval_s`` apart, then exits 0."""

    @abstractmethod
    def unreachable_backend(self) -> tuple[ComputeBackend, str]:
        """A backend whose engine does not answer, and the engine URL its errors must name."""


def wait_for(predicate: Callable[[], bool], timeout_s: float = FINISH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(POLL_INTERVAL_S)


def wait_finished(backend: ComputeBackend, container_id: str) -> ContainerState:
    wait_for(lambda: backend.inspect(container_id).finished)
    return backend.inspect(container_id)


class BackendContract:
    """Subclass as ``TestXContract`` and provide a ``harness`` fixture."""

    def test_ping_and_capacity(self, harness: ContractHarness) -> None:
        harness.backend.ping()
        cap = harness.backend.capacity()
        assert cap.cpus > 0
        assert cap.memory > 0
        assert cap.engine_version
        assert isinstance(cap.gpus, list)

    def test_run_then_inspect_running(self, harness: ContractHarness) -> None:
        before = harness.now()
        cid = harness.run_long()
        state = harness.backend.inspect(cid)
        assert state.id == cid
        assert state.status == STATUS_RUNNING and state.running and not state.finished
        assert state.exit_code is None and state.finished_at is None
        assert state.started_at is not None and state.started_at >= before - TIME_SLACK_S
        assert state.labels.items() >= harness.labels.items()
        assert state.image == harness.image
        # A container can be looked up by its name, too.
        assert harness.backend.inspect(state.name).id == cid

    def test_exit_code_and_logs_after_exit(self, harness: ContractHarness) -> None:
        cid = harness.run_exiting("hello from the job\nsecond line\n", 3)
        state = wait_finished(harness.backend, cid)
        assert state.exit_code == 3
        assert not state.oom_killed
        assert state.finished_at is not None and state.started_at is not None
        assert state.finished_at >= state.started_at
        output = b"".join(harness.backend.logs(cid))
        assert output == b"hello from the job\nsecond line\n"

    def test_logs_with_timestamps_and_since(self, harness: ContractHarness) -> None:
        cid = harness.run_exiting("one\ntwo\n", 0)
        wait_finished(harness.backend, cid)
        lines = b"".join(harness.backend.logs(cid, timestamps=True)).decode().splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == ["one", "two"]
        assert all(line.split(" ", 1)[0].endswith("Z") for line in lines)
        later = harness.now() + 3600
        assert b"".join(harness.backend.logs(cid, since=later)) == b""

    def test_logs_follow_streams_until_exit(self, harness: ContractHarness) -> None:
        cid = harness.run_streaming(["first", "second", "third"], interval_s=0.3)
        chunks: list[bytes] = []
        done = threading.Event()

        def follow() -> None:
            chunks.extend(harness.backend.logs(cid, follow=True))
            done.set()

        threading.Thread(target=follow, daemon=True).start()
        assert done.wait(FINISH_TIMEOUT_S), "follow did not end when the container exited"
        assert b"".join(chunks) == b"first\nsecond\nthird\n"
        assert harness.backend.inspect(cid).exit_code == 0

    def test_list_by_labels_includes_finished(self, harness: ContractHarness) -> None:
        a = harness.run_long(labels={**harness.labels, "deepdock.job": "a"})
        b = harness.run_exiting("", 0, labels={**harness.labels, "deepdock.job": "b"})
        wait_finished(harness.backend, b)
        mine = harness.backend.list_containers(harness.labels)
        assert [s.id for s in mine] == [a, b]  # oldest first
        only_b = harness.backend.list_containers({**harness.labels, "deepdock.job": "b"})
        assert [(s.id, s.exit_code) for s in only_b] == [(b, 0)]
        assert harness.backend.list_containers({**harness.labels, "deepdock.job": "nope"}) == []

    def test_stop_sends_sigterm(self, harness: ContractHarness) -> None:
        cid = harness.run_long()
        t0 = harness.now()
        harness.backend.stop(cid, grace_s=STOP_GRACE_S * 5)
        state = harness.backend.inspect(cid)
        assert state.finished
        assert state.exit_code == EXIT_CODE_SIGTERM
        assert state.finished_at is not None and state.finished_at - t0 < STOP_GRACE_S * 5
        # Stopping again is a no-op.
        harness.backend.stop(cid, grace_s=STOP_GRACE_S)
        assert harness.backend.inspect(cid).exit_code == EXIT_CODE_SIGTERM

    def test_stop_kills_after_grace(self, harness: ContractHarness) -> None:
        cid = harness.run_ignoring_sigterm()
        t0 = harness.now()
        harness.backend.stop(cid, grace_s=STOP_GRACE_S)
        state = harness.backend.inspect(cid)
        assert state.exit_code == EXIT_CODE_SIGKILL
        assert state.finished_at is not None
        assert state.finished_at - t0 >= STOP_GRACE_S - TIME_SLACK_S

    def test_remove_is_idempotent(self, harness: ContractHarness) -> None:
        cid = harness.run_long()
        harness.backend.remove(cid)  # kills a running container
        with pytest.raises(NotFoundError):
            harness.backend.inspect(cid)
        harness.backend.remove(cid)
        assert harness.backend.list_containers(harness.labels) == []

    def test_unknown_container_is_not_found(self, harness: ContractHarness) -> None:
        ghost = "deepdock-contract-no-such-container"
        with pytest.raises(NotFoundError):
            harness.backend.inspect(ghost)
        with pytest.raises(NotFoundError):
            harness.backend.logs(ghost)
        with pytest.raises(NotFoundError):
            harness.backend.stop(ghost, grace_s=STOP_GRACE_S)

    def test_missing_image_is_named_and_never_pulled(self, harness: ContractHarness) -> None:
        assert harness.backend.image_exists(harness.image)
        assert not harness.backend.image_exists(MISSING_IMAGE)
        spec = harness.spec(["true"], image=MISSING_IMAGE)
        with pytest.raises(ImageMissingError, match=MISSING_IMAGE):
            harness.backend.run(spec)
        assert harness.backend.list_containers(harness.labels) == []

    def test_name_conflict(self, harness: ContractHarness) -> None:
        cid = harness.run_long()
        name = harness.backend.inspect(cid).name
        with pytest.raises(ConflictError):
            harness.backend.run(harness.spec(["true"], name=name))
        assert [s.id for s in harness.backend.list_containers(harness.labels)] == [cid]

    def test_unreachable_engine_is_named(self, harness: ContractHarness) -> None:
        backend, url = harness.unreachable_backend()
        calls: list[Callable[[], object]] = [
            backend.ping,
            backend.capacity,
            lambda: backend.inspect("x1"),
            lambda: backend.list_containers(harness.labels),
            lambda: backend.run(harness.spec(["true"])),
            lambda: backend.stop("x1", STOP_GRACE_S),
        ]
        for call in calls:
            with pytest.raises(EngineUnreachableError) as info:
                call()
            assert url in info.value.message
