"""DockerBackend against real engines: the shared contracts (protocol, files, networks, image transfer
to the second engine), then what only `docker inspect` or a real connection shows."""

from __future__ import annotations

import io
import posixpath
import shlex
import socket
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import docker
import pytest
from tests.integration.conftest import TEST_LABEL

from deepdock.compute.abilities import VolumeStore, ability
from deepdock.compute.base import ComputeBackend, ContainerSpec, VolumeMount
from deepdock.compute.docker import DockerBackend
from deepdock.compute.docker.backend import JOB_FALLBACK_USER
from deepdock.compute.testing.conformance import (
    BackendContract,
    FileTransferContract,
    FileTransferHarness,
    ImageTransferContract,
    ImageTransferHarness,
    NetworkingContract,
    VolumeStoreContract,
    contract_network_name,
    tar_of,
    wait_finished,
    wait_for,
)
from deepdock.errors import EngineError, EngineUnreachableError, SpecError

pytestmark = pytest.mark.docker

MIB = 1024**2
UNREACHABLE_SOCKET_URL = "unix:///run/deepdock-no-such-engine.sock"
UNREACHABLE_TCP_URL = "tcp://127.0.0.1:1"
# Short client timeout for engines that are expected not to answer.
UNREACHABLE_TIMEOUT_S = 3.0
OOM_MEMORY_BYTES = 32 * MIB
STOP_GRACE_S = 3.0
APP_UID = 1000


class DockerHarness(FileTransferHarness):
    def __init__(self, backend: DockerBackend, image: str, labels: dict[str, str]) -> None:
        self.backend = backend
        self.image = image
        self.labels = labels

    def now(self) -> float:
        return time.time()

    def run_exiting(self, output: str, exit_code: int, **overrides: object) -> str:
        script = f'printf "%s" "$OUT"; exit {exit_code}'
        env = {"OUT": output}
        return self.backend.run(self.spec(["sh", "-c", script], env=env, **overrides))

    def run_long(self, **overrides: object) -> str:
        return self.backend.run(self.spec(["sleep", "300"], **overrides))

    def run_ignoring_sigterm(self) -> str:
        cid = self.backend.run(self.spec(["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"]))
        # Stop only once the trap is in place, or SIGTERM could land before it.
        wait_for(lambda: b"ready" in b"".join(self.backend.logs(cid)))
        return cid

    def run_streaming(self, lines: list[str], interval_s: float) -> str:
        words = " ".join(shlex.quote(line) for line in lines)
        script = f"for l in {words}; do sleep {interval_s}; echo $l; done"
        return self.backend.run(self.spec(["sh", "-c", script]))

    def run_writing(self, files: dict[str, bytes]) -> str:
        # Contents travel in the environment, so no quoting of data is needed.
        env = {f"F{i}": data.decode() for i, data in enumerate(files.values())}
        script = "; ".join(f"mkdir -p {shlex.quote(posixpath.dirname(path))} && printf '%s' \"$F{i}\" > {shlex.quote(path)}"
                           for i, path in enumerate(files))
        cid = self.backend.run(self.spec(["sh", "-c", f"set -e; {script}"], env=env))
        assert wait_finished(self.backend, cid).exit_code == 0, b"".join(self.backend.logs(cid))
        return cid

    def unreachable_backend(self) -> tuple[ComputeBackend, str]:
        return DockerBackend(UNREACHABLE_SOCKET_URL, timeout_s=UNREACHABLE_TIMEOUT_S), UNREACHABLE_SOCKET_URL


class DockerTransferHarness(DockerHarness, ImageTransferHarness):
    """The main engine and the second engine (scripts/second_engine.sh) as source and target."""

    def __init__(self, backend: DockerBackend, second: DockerBackend, image: str, labels: dict[str, str]) -> None:
        super().__init__(backend, image, labels)
        self.second = second
        self.made: list[str] = []

    def new_image(self) -> str:
        # A fresh image (its own content, so its own id) carrying the test label: a real transfer, and
        # labelled_cleanup removes it from the main engine.
        tag = f"deepdock-test-xfer:{uuid.uuid4().hex[:12]}"
        repository, _, version = tag.partition(":")
        rootfs = tar_of({"etc/deepdock-xfer": tag.encode()})
        changes = [f"LABEL {k}={v}" for k, v in self.labels.items()]
        self.backend._api.import_image_from_data(rootfs, repository=repository, tag=version, changes=changes)
        self.made.append(tag)
        return tag

    def cleanup(self) -> None:
        for backend in (self.backend, self.second):
            for tag in self.made:
                try:
                    backend._api.remove_image(tag, force=True)
                except docker.errors.NotFound:
                    pass


@pytest.fixture
def backend() -> Iterator[DockerBackend]:
    b = DockerBackend()
    yield b
    b.close()


@pytest.fixture
def harness(backend, busybox_image, labelled_cleanup) -> DockerHarness:
    return DockerHarness(backend, busybox_image, labelled_cleanup)


class TestDockerBackendContract(BackendContract):
    pass


class TestDockerFileTransfer(FileTransferContract):
    pass


class TestDockerNetworking(NetworkingContract):
    pass


class TestDockerVolumes(VolumeStoreContract):
    pass


class TestSecondEngineNetworking(NetworkingContract):
    """The same on the second engine (also ``--bridge=none --iptables=false``, its own data root)."""

    @pytest.fixture
    def harness(self, second_engine, busybox_image, labelled_cleanup) -> Iterator[DockerHarness]:
        second = DockerBackend(second_engine)
        yield DockerHarness(second, busybox_image, labelled_cleanup)
        # labelled_cleanup only sees the main engine: clean this one the same way.
        for state in second.list_containers(labelled_cleanup):
            second.remove(state.id)
        for name in second.list_networks(labelled_cleanup):
            second.remove_network(name)
        second.close()


class TestDockerImageTransfer(ImageTransferContract):
    @pytest.fixture
    def harness(self, backend, second_engine, busybox_image, labelled_cleanup) -> Iterator[DockerTransferHarness]:
        second = DockerBackend(second_engine)
        h = DockerTransferHarness(backend, second, busybox_image, labelled_cleanup)
        yield h
        h.cleanup()
        second.close()


def _output(backend: DockerBackend, cid: str) -> str:
    wait_finished(backend, cid)
    return b"".join(backend.logs(cid)).decode()


def test_limits_and_hardening_in_docker_inspect(harness, docker_client, tmp_path):
    backend = harness.backend
    (tmp_path / "data.txt").write_text("dataset\n")
    tmp_path.chmod(0o755)  # readable by the job's unprivileged user, as a dataset root would be
    volume = docker_client.volumes.create(labels=harness.labels)
    labels = {
        **harness.labels,
        "deepdock.job": "j1",
        "deepdock.attempt": "1",
        "deepdock.node": "n1",
        "deepdock.managed": "true",
    }
    spec = harness.spec(
        ["sh", "-c", "cat /data/data.txt; echo x > /out/ok && echo wrote; echo x > /data/no || echo ro"],
        labels=labels,
        cpus=0.5,
        memory=96 * MIB,
        pids_limit=77,
        shm_size=16 * MIB,
        volumes=[
            VolumeMount(str(tmp_path), "/data", read_only=True),
            VolumeMount(volume.name, "/out", read_only=False),
        ],
    )
    cid = backend.run(spec)
    info = docker_client.api.inspect_container(cid)
    hc = info["HostConfig"]
    assert hc["NanoCpus"] == 500_000_000
    assert hc["Memory"] == 96 * MIB
    assert hc["MemorySwap"] == 96 * MIB  # no swap beyond the limit
    assert hc["PidsLimit"] == 77
    assert hc["ShmSize"] == 16 * MIB
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["CapDrop"] == ["ALL"]
    assert hc["Init"] is True
    assert hc["NetworkMode"] == "none"
    assert hc["RestartPolicy"]["Name"] in ("", "no")
    assert not hc["DeviceRequests"]
    assert info["Config"]["Labels"] == labels
    assert info["Config"]["User"] == JOB_FALLBACK_USER  # the image has no user: never root, nobody
    assert "NVIDIA_VISIBLE_DEVICES=void" in info["Config"]["Env"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/data"]["Type"] == "bind"
    assert mounts["/out"]["RW"] is True and mounts["/out"]["Name"] == volume.name
    out = _output(backend, cid)
    assert "dataset" in out and "wrote" in out and "ro" in out.split()


def test_user_defaults_to_the_images_non_root_user(backend, busybox_image, busybox_user_image, labelled_cleanup):
    h = DockerHarness(backend, busybox_user_image, labelled_cleanup)
    as_image_user = backend.run(h.spec(["id", "-u"]))
    assert _output(backend, as_image_user).strip() == str(APP_UID)
    # An image without a user (root) runs as the unprivileged fallback, never as root.
    root_image = backend.run(replace(h.spec(["id", "-u"]), image=busybox_image))
    assert _output(backend, root_image).strip() == JOB_FALLBACK_USER.split(":")[0]
    explicit = backend.run(replace(h.spec(["id", "-u"]), image=busybox_image, user=str(APP_UID)))
    assert _output(backend, explicit).strip() == str(APP_UID)


def test_a_job_cannot_write_root_owned_host_files_through_a_writable_bind(harness, tmp_path):
    """The host-level check of docs/security.md: even a writable bind (an admin's grant) gives the job
    only what the unprivileged user may do; root-owned files on the host stay as they were."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    precious = shared / "precious.txt"
    precious.write_text("root's\n")
    precious.chmod(0o644)
    # stderr is dropped: its "Operation not permitted" lines interleave with stdout in any order.
    script = ("exec 2>/dev/null; echo x >> /host/precious.txt && echo appended; "
              "touch /host/new && echo created; chmod 777 /host/precious.txt && echo chmodded; id -u")
    cid = harness.backend.run(harness.spec(["sh", "-c", script],
                                           volumes=[VolumeMount(str(shared), "/host", read_only=False)]))
    out = _output(harness.backend, cid)
    assert out.split() == [JOB_FALLBACK_USER.split(":")[0]]
    assert precious.read_text() == "root's\n" and precious.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in shared.iterdir()) == ["precious.txt"]


def test_a_writable_named_volume_belongs_to_the_job_user_and_keeps_its_data(harness, docker_client):
    name = f"deepdock-test-vol-{uuid.uuid4().hex[:8]}"
    ability(harness.backend, VolumeStore).ensure_volume(name, harness.labels)
    try:
        writer = harness.backend.run(harness.spec(["sh", "-c", "echo kept > /data/f && stat -c %u /data"],
                                                  volumes=[VolumeMount(name, "/data", read_only=False)]))
        assert _output(harness.backend, writer).split() == [JOB_FALLBACK_USER.split(":")[0]]
        reader = harness.backend.run(harness.spec(["sh", "-c", "cat /data/f; (echo y > /data/g) 2>/dev/null || echo ro"],
                                                  volumes=[VolumeMount(name, "/data", read_only=True)]))
        assert _output(harness.backend, reader).split() == ["kept", "ro"]
    finally:
        for state in harness.backend.list_containers(harness.labels):
            harness.backend.remove(state.id)
        ability(harness.backend, VolumeStore).remove_volume(name)


def _code_tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"main.sh": b"echo running main\n", "pkg/data.txt": b"payload\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600  # made readable by the rewrite
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_code_archive_lands_in_workdir_owned_by_the_user(backend, busybox_user_image, labelled_cleanup):
    h = DockerHarness(backend, busybox_user_image, labelled_cleanup)
    script = "pwd; sh main.sh; cat pkg/data.txt; stat -c '%u' . pkg/data.txt; touch new && echo writable"
    cid = backend.run(h.spec(["sh", "-c", script], workdir="/work/code", code_archive=_code_tar_gz()))
    lines = _output(backend, cid).split()
    assert lines == ["/work/code", "running", "main", "payload", str(APP_UID), str(APP_UID), "writable"]
    assert backend.inspect(cid).exit_code == 0


def test_corrupt_code_archive_leaves_nothing_behind(harness):
    spec = harness.spec(["true"], code_archive=b"this is not a tar archive at all" * 20)
    with pytest.raises(SpecError):
        harness.backend.run(spec)
    assert harness.backend.list_containers(harness.labels) == []


def test_stop_lets_a_trapping_process_finish_gracefully(harness):
    backend = harness.backend
    script = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.2; done"
    cid = backend.run(harness.spec(["sh", "-c", script]))
    wait_for(lambda: b"ready" in b"".join(backend.logs(cid)))
    t0 = time.monotonic()
    backend.stop(cid, grace_s=STOP_GRACE_S * 5)
    assert time.monotonic() - t0 < STOP_GRACE_S * 5
    state = backend.inspect(cid)
    assert state.exit_code == 0
    assert b"bye" in b"".join(backend.logs(cid))


def test_stop_waits_the_grace_before_killing(harness):
    cid = harness.run_ignoring_sigterm()
    t0 = time.monotonic()
    harness.backend.stop(cid, grace_s=STOP_GRACE_S)
    elapsed = time.monotonic() - t0
    assert STOP_GRACE_S - 0.5 <= elapsed < STOP_GRACE_S + 10
    assert harness.backend.inspect(cid).exit_code == 137


def test_memory_over_limit_is_oom_killed_and_the_host_is_fine(harness):
    backend = harness.backend
    # awk doubles a string until the kernel kills it at the cgroup limit (there is no swap to spill to).
    hog = ["awk", 'BEGIN { s = "x"; while (1) s = s s }']
    cid = backend.run(harness.spec(hog, memory=OOM_MEMORY_BYTES))
    state = wait_finished(backend, cid)
    assert state.oom_killed is True
    assert state.exit_code == 137
    backend.ping()
    survivor = harness.run_exiting("still here\n", 0)
    assert _output(backend, survivor) == "still here\n"


def test_gpu_request_is_made_and_a_failed_start_leaves_nothing(harness):
    # This engine has no nvidia runtime, so a device request cannot be satisfied: the start fails,
    # which proves the request is sent, and the half-made container must be removed again.
    spec = harness.spec(["true"], gpu_indices=[0])
    with pytest.raises(EngineError, match="nvidia"):
        harness.backend.run(spec)
    assert harness.backend.list_containers(harness.labels) == []


def test_user_defined_network(harness, docker_client):
    net = docker_client.networks.create(f"deepdock-test-{harness.labels['deepdock.test']}", labels=harness.labels)
    cid = harness.backend.run(harness.spec(["sleep", "60"], network=net.name, hostname="worker-0"))
    info = docker_client.api.inspect_container(cid)
    assert info["HostConfig"]["NetworkMode"] == net.name
    assert info["Config"]["Hostname"] == "worker-0"
    harness.backend.remove(cid)


def test_stats_of_a_running_container(harness):
    cid = harness.run_long(memory=48 * MIB)
    stats = harness.backend.stats(cid)
    assert stats.memory_limit == 48 * MIB
    assert stats.pids >= 1
    assert stats.cpu_percent >= 0.0


def test_capacity_matches_docker_info(backend, docker_client):
    info = docker_client.info()
    cap = backend.capacity()
    assert cap.cpus == info["NCPU"]
    assert cap.memory == info["MemTotal"]
    assert cap.engine_version == info["ServerVersion"]
    assert cap.arch == info["Architecture"] and cap.os == info["OSType"]
    assert "nvidia" not in (info.get("Runtimes") or {})
    assert cap.gpus == []


@pytest.mark.parametrize("url", [UNREACHABLE_TCP_URL, UNREACHABLE_SOCKET_URL])
def test_unreachable_engine_url_is_named(url):
    backend = DockerBackend(url, timeout_s=UNREACHABLE_TIMEOUT_S)
    with pytest.raises(EngineUnreachableError, match=url.replace(".", r"\.")):
        backend.ping()
    with pytest.raises(EngineUnreachableError, match="unreachable"):
        backend.run(
            ContainerSpec(
                name="deepdock-never",
                image="x",
                command=["true"],
                env={},
                labels={},
                cpus=1,
                memory=64 * MIB,
                pids_limit=64,
                shm_size=MIB,
            )
        )


def test_a_published_port_is_reachable_from_the_host(harness):
    # `docker-proxy` forwards the host port (no iptables needed); what another node would connect to.
    nets = harness.backend
    name = contract_network_name()
    nets.create_network(name, harness.labels)
    script = "echo ready; while true; do echo pong | nc -l -p 8080; done"
    cid = harness.backend.run(harness.spec(["sh", "-c", script], network=name, ports=[8080]))
    wait_for(lambda: b"ready" in b"".join(harness.backend.logs(cid)))
    host_port = harness.backend.inspect(cid).ports[8080]

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", host_port), timeout=2) as conn:
                return conn.recv(16).startswith(b"pong")
        except OSError:
            return False

    wait_for(answers, timeout_s=15)
    harness.backend.remove(cid)
    nets.remove_network(name)


def test_networks_carry_their_labels_and_are_bridges(harness, docker_client):
    name = contract_network_name()
    network_id = harness.backend.create_network(name, {**harness.labels, "deepdock.job": "j1"})
    info = docker_client.api.inspect_network(network_id)
    assert info["Name"] == name and info["Driver"] == "bridge"
    assert info["Labels"] == {**harness.labels, "deepdock.job": "j1"}
    assert info["Labels"][TEST_LABEL] == harness.labels[TEST_LABEL]
    harness.backend.remove_network(name)
