# mypy: disable-error-code="type-abstract"
# (``ability(backend, Kind)`` takes an abstract class on purpose; mypy would demand a concrete one.)
"""The contracts every backend must obey, as reusable pytest suites.

``BackendContract`` is the ``ComputeBackend`` protocol; ``FileTransferContract``, ``NetworkingContract``
and ``ImageTransferContract`` are the abilities of ``compute.abilities`` (a backend runs those it has).
A backend's test module subclasses them (their names do not start with ``Test``, so they are not
collected on their own) and provides a ``harness`` fixture: a ``ContractHarness`` (or one of its
extensions below) that knows how to make that backend's containers print, exit, ignore SIGTERM or
write files. The fake runs them in tests/compute in milliseconds; the Docker backend runs the very same
tests in tests/integration against real engines. Everything a test creates carries ``harness.labels``.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from deepdock.compute.abilities import FileTransfer, ImageProvision, Networking, VolumeStore, ability, copy_image
from deepdock.compute.base import (
    DEFAULT_WORKDIR,
    EXIT_CODE_SIGKILL,
    EXIT_CODE_SIGTERM,
    STATUS_RUNNING,
    ComputeBackend,
    ContainerSpec,
    ContainerState,
    VolumeMount,
)
from deepdock.compute.workspace import ARTIFACTS_SUBDIR, extract_tree, workspace_archive
from deepdock.errors import (
    ConflictError,
    EngineError,
    EngineUnreachableError,
    ImageMissingError,
    NotFoundError,
)

# Generous bounds for real engines; the fake finishes instantly.
FINISH_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
STOP_GRACE_S = 2.0
# Slack for engine and clock granularity when comparing times (docker stop takes whole seconds).
TIME_SLACK_S = 0.5
MIB = 1024**2
MISSING_IMAGE = "deepdock-contract-missing-image:does-not-exist"
# A container port to publish (nothing needs to listen on it for the engine to bind a host port).
CONTRACT_PORT = 8080


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


# ---------------------------------------------------------------------------------------- abilities


class FileTransferHarness(ContractHarness):
    """A harness whose backend is a ``FileTransfer``."""

    @abstractmethod
    def run_writing(self, files: dict[str, bytes]) -> str:
        """Start a container that writes ``files`` (absolute paths, short text) and exits 0; return its
        id once it has finished."""


class ImageTransferHarness(ContractHarness):
    """A harness with a second engine (``second``), both ``ImageProvision``."""

    second: ComputeBackend

    @abstractmethod
    def new_image(self) -> str:
        """The tag of a fresh image present on ``backend`` only; the harness removes it afterwards."""


def tar_of(files: dict[str, bytes]) -> bytes:
    """A plain tar of relative ``name -> content``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tar_contents(archive: bytes) -> tuple[set[str], dict[str, bytes]]:
    """(every member name, regular file name -> content) of a tar."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
        files = {}
        for m in tar.getmembers():
            extracted = tar.extractfile(m) if m.isfile() else None
            if extracted is not None:
                files[m.name] = extracted.read()
    return names, files


class FileTransferContract:
    """``FileTransfer``: subclass as ``TestXFiles`` and provide a ``harness`` (a ``FileTransferHarness``)."""

    def test_copy_out_a_folder_of_a_finished_container(self, harness: FileTransferHarness, tmp_path: Path) -> None:
        cid = harness.run_writing({"/tmp/out/a.txt": b"alpha\n", "/tmp/out/sub/b.txt": b"beta\n"})
        assert harness.backend.inspect(cid).finished
        archive = ability(harness.backend, FileTransfer).copy_out(cid, "/tmp/out")
        names, files = tar_contents(archive)
        # The folder's own name is the top entry, as `docker cp` makes it.
        assert names == {"out", "out/a.txt", "out/sub", "out/sub/b.txt"}
        assert files == {"out/a.txt": b"alpha\n", "out/sub/b.txt": b"beta\n"}
        assert extract_tree(archive, tmp_path / "dest") == 2
        assert (tmp_path / "dest" / "a.txt").read_bytes() == b"alpha\n"
        assert (tmp_path / "dest" / "sub" / "b.txt").read_bytes() == b"beta\n"

    def test_copy_out_a_single_file(self, harness: FileTransferHarness) -> None:
        cid = harness.run_writing({"/tmp/out/only.txt": b"one\n"})
        names, files = tar_contents(ability(harness.backend, FileTransfer).copy_out(cid, "/tmp/out/only.txt"))
        assert names == {"only.txt"} and files == {"only.txt": b"one\n"}

    def test_missing_path_or_container_is_not_found(self, harness: FileTransferHarness) -> None:
        files = ability(harness.backend, FileTransfer)
        cid = harness.run_writing({"/tmp/out/a.txt": b"a"})
        with pytest.raises(NotFoundError):
            files.copy_out(cid, "/tmp/out/no-such-file")
        with pytest.raises(NotFoundError):
            files.copy_in(cid, "/no-such-folder", tar_of({"x": b"x"}))
        with pytest.raises(NotFoundError):
            files.copy_out("deepdock-contract-no-such-container", "/tmp/out")
        with pytest.raises(NotFoundError):
            files.copy_in("deepdock-contract-no-such-container", "/", tar_of({"x": b"x"}))

    def test_copy_in_then_out_running_and_stopped(self, harness: FileTransferHarness) -> None:
        files = ability(harness.backend, FileTransfer)
        cid = harness.run_long()
        files.copy_in(cid, DEFAULT_WORKDIR, tar_of({"in/x.txt": b"ex\n"}))
        _, got = tar_contents(files.copy_out(cid, f"{DEFAULT_WORKDIR}/in/x.txt"))
        assert got == {"x.txt": b"ex\n"}
        harness.backend.stop(cid, grace_s=STOP_GRACE_S)
        files.copy_in(cid, f"{DEFAULT_WORKDIR}/in", tar_of({"y.txt": b"why\n"}))
        _, got = tar_contents(files.copy_out(cid, f"{DEFAULT_WORKDIR}/in"))
        assert got == {"in/x.txt": b"ex\n", "in/y.txt": b"why\n"}

    def test_workspace_archive_gives_code_and_an_empty_artifacts_folder(self, harness: FileTransferHarness,
                                                                          tmp_path: Path) -> None:
        files = ability(harness.backend, FileTransfer)
        cid = harness.run_long(code_archive=workspace_archive(tar_of({"train.py": b"print(1)\n"})))
        artifacts = files.copy_out(cid, f"{DEFAULT_WORKDIR}/{ARTIFACTS_SUBDIR}")
        assert tar_contents(artifacts)[0] == {ARTIFACTS_SUBDIR}
        assert extract_tree(artifacts, tmp_path) == 0
        assert tar_contents(files.copy_out(cid, f"{DEFAULT_WORKDIR}/train.py"))[1] == {"train.py": b"print(1)\n"}

    def test_unreachable_engine_is_named(self, harness: FileTransferHarness) -> None:
        backend, url = harness.unreachable_backend()
        files = ability(backend, FileTransfer)
        for call in (lambda: files.copy_out("x1", "/out"), lambda: files.copy_in("x1", "/", tar_of({"x": b""}))):
            with pytest.raises(EngineUnreachableError) as info:
                call()
            assert url in info.value.message


def contract_network_name() -> str:
    return f"deepdock-contract-net-{uuid.uuid4().hex[:12]}"


class NetworkingContract:
    """``Networking`` and published ports: subclass as ``TestXNetworks`` and provide a ``harness``."""

    def test_create_is_idempotent_listed_by_labels_and_remove_is_idempotent(self, harness: ContractHarness) -> None:
        nets = ability(harness.backend, Networking)
        name = contract_network_name()
        first = nets.create_network(name, harness.labels)
        assert first and nets.create_network(name, harness.labels) == first
        assert name in nets.list_networks(harness.labels)
        assert name not in nets.list_networks({**harness.labels, "deepdock.contract": "other"})
        nets.remove_network(name)
        assert name not in nets.list_networks(harness.labels)
        nets.remove_network(name)  # gone: a no-op

    def test_published_port_shows_a_host_port_while_running(self, harness: ContractHarness) -> None:
        nets = ability(harness.backend, Networking)
        name = contract_network_name()
        nets.create_network(name, harness.labels)
        a = harness.run_long(network=name, ports=[CONTRACT_PORT])
        b = harness.run_long(network=name, ports=[CONTRACT_PORT])
        ports_a, ports_b = harness.backend.inspect(a).ports, harness.backend.inspect(b).ports
        assert set(ports_a) == {CONTRACT_PORT} and set(ports_b) == {CONTRACT_PORT}
        assert ports_a[CONTRACT_PORT] > 0 and ports_b[CONTRACT_PORT] > 0
        assert ports_a[CONTRACT_PORT] != ports_b[CONTRACT_PORT]  # one host, two containers: two host ports
        assert harness.backend.inspect(harness.run_long(network=name)).ports == {}
        harness.backend.stop(a, grace_s=STOP_GRACE_S)
        assert harness.backend.inspect(a).ports == {}  # a finished container holds no host port
        for state in harness.backend.list_containers(harness.labels):
            harness.backend.remove(state.id)
        nets.remove_network(name)

    def test_ports_without_a_network_are_refused(self, harness: ContractHarness) -> None:
        with pytest.raises(EngineError, match="network"):
            harness.backend.run(harness.spec(["true"], ports=[CONTRACT_PORT]))
        assert harness.backend.list_containers(harness.labels) == []

    def test_unknown_network_is_an_engine_error(self, harness: ContractHarness) -> None:
        with pytest.raises(EngineError, match="network"):
            harness.backend.run(harness.spec(["true"], network=contract_network_name()))
        assert harness.backend.list_containers(harness.labels) == []

    def test_a_network_in_use_is_not_removed(self, harness: ContractHarness) -> None:
        nets = ability(harness.backend, Networking)
        name = contract_network_name()
        nets.create_network(name, harness.labels)
        cid = harness.run_long(network=name)
        with pytest.raises(EngineError):
            nets.remove_network(name)
        assert name in nets.list_networks(harness.labels)
        harness.backend.remove(cid)
        nets.remove_network(name)
        assert name not in nets.list_networks(harness.labels)

    def test_unreachable_engine_is_named(self, harness: ContractHarness) -> None:
        backend, url = harness.unreachable_backend()
        nets = ability(backend, Networking)
        calls: list[Callable[[], object]] = [
            lambda: nets.create_network(contract_network_name(), harness.labels),
            lambda: nets.remove_network(contract_network_name()),
            lambda: nets.list_networks(harness.labels),
        ]
        for call in calls:
            with pytest.raises(EngineUnreachableError) as info:
                call()
            assert url in info.value.message


def contract_volume_name() -> str:
    return f"deepdock-contract-vol-{uuid.uuid4().hex[:12]}"


class VolumeStoreContract:
    """``VolumeStore``: subclass as ``TestXVolumes`` and provide a ``harness``."""

    def test_ensure_is_idempotent_listed_by_labels_and_remove_is_idempotent(self, harness: ContractHarness) -> None:
        volumes = ability(harness.backend, VolumeStore)
        name = contract_volume_name()
        labels = {**harness.labels, "deepdock.contract.volume": name}
        volumes.ensure_volume(name, labels)
        volumes.ensure_volume(name, {**labels, "ignored": "yes"})  # the existing one is kept as it was
        [found] = volumes.list_volumes(labels)
        assert found.name == name and found.labels.get("deepdock.contract.volume") == name
        assert "ignored" not in found.labels
        assert volumes.list_volumes({**labels, "deepdock.contract": "other"}) == []
        volumes.remove_volume(name)
        assert volumes.list_volumes(labels) == []
        volumes.remove_volume(name)  # gone: a no-op

    def test_a_volume_in_use_is_not_removed(self, harness: ContractHarness) -> None:
        volumes = ability(harness.backend, VolumeStore)
        name = contract_volume_name()
        labels = {**harness.labels, "deepdock.contract.volume": name}
        volumes.ensure_volume(name, labels)
        cid = harness.run_long(volumes=[VolumeMount(name, "/data", read_only=False)])
        with pytest.raises(ConflictError, match=name):
            volumes.remove_volume(name)
        assert [v.name for v in volumes.list_volumes(labels)] == [name]
        harness.backend.remove(cid)
        volumes.remove_volume(name)
        assert volumes.list_volumes(labels) == []

    def test_unreachable_engine_is_named(self, harness: ContractHarness) -> None:
        backend, url = harness.unreachable_backend()
        volumes = ability(backend, VolumeStore)
        calls: list[Callable[[], object]] = [
            lambda: volumes.ensure_volume(contract_volume_name(), harness.labels),
            lambda: volumes.remove_volume(contract_volume_name()),
            lambda: volumes.list_volumes(harness.labels),
        ]
        for call in calls:
            with pytest.raises(EngineUnreachableError) as info:
                call()
            assert url in info.value.message


class ImageTransferContract:
    """Moving images between two engines (save → load): provide a ``harness`` (an ``ImageTransferHarness``)."""

    def test_export_then_import_into_the_second_engine(self, harness: ImageTransferHarness) -> None:
        tag = harness.new_image()
        assert harness.backend.image_exists(tag) and not harness.second.image_exists(tag)
        stream = ability(harness.backend, ImageProvision).export_image(tag)
        ability(harness.second, ImageProvision).import_image(stream)
        assert harness.second.image_exists(tag)  # under exactly that tag

    def test_copy_image_copies_once(self, harness: ImageTransferHarness) -> None:
        tag = harness.new_image()
        assert copy_image(harness.backend, harness.second, tag, node="n2") is True
        assert harness.second.image_exists(tag)
        assert copy_image(harness.backend, harness.second, tag, node="n2") is False

    def test_missing_image_is_image_missing(self, harness: ImageTransferHarness) -> None:
        with pytest.raises(ImageMissingError, match=MISSING_IMAGE):
            ability(harness.backend, ImageProvision).export_image(MISSING_IMAGE)
        with pytest.raises(ImageMissingError, match=MISSING_IMAGE):
            copy_image(harness.backend, harness.second, MISSING_IMAGE)
        assert not harness.second.image_exists(MISSING_IMAGE)

    def test_importing_garbage_is_an_engine_error(self, harness: ImageTransferHarness) -> None:
        with pytest.raises(EngineError):
            ability(harness.second, ImageProvision).import_image(iter([b"this is not ", b"an image archive"]))

    def test_unreachable_engine_is_named(self, harness: ImageTransferHarness) -> None:
        backend, url = harness.unreachable_backend()
        images = ability(backend, ImageProvision)
        for call in (lambda: images.export_image(harness.image), lambda: images.import_image(iter([b"x"]))):
            with pytest.raises(EngineUnreachableError) as info:
                call()
            assert url in info.value.message
