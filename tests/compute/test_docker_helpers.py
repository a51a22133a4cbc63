"""Pure helpers of the Docker backend: code archive rewrite, user resolution, docker time parsing, ports,
which engines are local, and the timeout each kind of call gets (all without an engine)."""

from __future__ import annotations

import gzip
import io
import socket
import tarfile
import time

import pytest

import deepdock.envs
from deepdock.compute.docker import (
    ARCHIVE_TIMEOUT_S,
    CONTROL_TIMEOUT_S,
    IMAGE_TRANSFER_TIMEOUT_S,
    DockerBackend,
    is_local_engine,
)
from deepdock.compute.docker.archive import (
    is_root_user,
    read_single_file,
    rebuild_archive,
    resolve_user,
    split_workdir,
)
from deepdock.compute.docker.backend import parse_docker_time
from deepdock.compute.docker.networks import port_bindings, published_ports
from deepdock.errors import EngineUnreachableError, SpecError, UnsupportedError
from deepdock.specs.env import EnvSpec

PASSWD = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nstaff:x:50:\n"


def _tar(entries: dict[str, bytes | None], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if gz else raw


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize("gz", [False, True])
def test_rebuild_puts_code_under_workdir_owned_by_user(gz):
    code = _tar({"./main.py": b"print(1)", "pkg": None, "pkg/x.txt": b"x"}, gz=gz)
    parent, data = rebuild_archive(code, "/srv/app/workspace", uid=1000, gid=1001)
    assert parent == "/srv/app"
    members = _members(data)
    assert list(members) == ["workspace", "workspace/main.py", "workspace/pkg", "workspace/pkg/x.txt"]
    assert all((m.uid, m.gid) == (1000, 1001) for m in members.values())
    assert members["workspace/main.py"].mode & 0o044 == 0o044  # readable whoever runs it


def test_rebuild_drops_escaping_entries_and_links():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name in ("../evil", "/etc/passwd2", "ok"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    _, data = rebuild_archive(buf.getvalue(), "/workspace", 0, 0)
    assert sorted(_members(data)) == ["workspace", "workspace/etc/passwd2", "workspace/ok"]


def test_rebuild_without_code_creates_only_the_workdir_and_rejects_bad_input():
    parent, data = rebuild_archive(None, "/workspace/", 5, 6)
    assert parent == "/" and list(_members(data)) == ["workspace"]
    with pytest.raises(SpecError, match="not a valid tar"):
        rebuild_archive(b"garbage" * 100, "/workspace", 0, 0)
    with pytest.raises(SpecError, match="absolute"):
        split_workdir("relative/dir")
    with pytest.raises(SpecError):
        split_workdir("/")


@pytest.mark.parametrize(
    ("user", "ids"),
    [
        ("app", (1000, 1001)),
        ("1000", (1000, 1001)),
        ("4242", (4242, 0)),
        ("app:staff", (1000, 50)),
        ("7:9", (7, 9)),
    ],
)
def test_resolve_user(user, ids):
    assert resolve_user(user, PASSWD, GROUP) == ids


def test_resolve_unknown_user_or_group_is_a_spec_error():
    with pytest.raises(SpecError, match="nobody"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(SpecError, match="wheel"):
        resolve_user("app:wheel", PASSWD, GROUP)


def test_root_users():
    assert all(is_root_user(u) for u in ("", "root", "0", "0:0", "root:wheel"))
    assert not any(is_root_user(u) for u in ("app", "1000", "1000:0"))


def test_read_single_file():
    assert read_single_file(_tar({"passwd": PASSWD.encode()})) == PASSWD
    assert read_single_file(_tar({"d": None})) == ""


def test_parse_docker_time():
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("") is None and parse_docker_time(None) is None
    assert parse_docker_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert parse_docker_time("2024-05-01T12:00:00.123456789Z") == pytest.approx(1714564800.123456789)
    assert parse_docker_time("2024-05-01T14:00:00.5+02:00") == pytest.approx(1714564800.5)


@pytest.mark.parametrize(("url", "local"), [
    ("", True), ("unix:///var/run/docker.sock", True), ("npipe:////./pipe/docker_engine", True),
    ("tcp://127.0.0.1:2375", True), ("tcp://localhost:2376", True), ("tcp://[::1]:2376", True),
    ("tcp://gpu-01.lan:2376", False), ("tcp://10.0.0.7:2376", False),
])
def test_which_engines_are_local(url, local):
    assert is_local_engine(url) is local


def test_only_a_local_engine_builds_environments_and_a_remote_one_says_why():
    assert DockerBackend("unix:///run/deepdock-no-such.sock").builds_environments
    remote = DockerBackend("tcp://gpu-01.invalid:2376")
    assert not remote.builds_environments
    with pytest.raises(UnsupportedError, match="tcp://gpu-01.invalid:2376 is not on this host"):
        remote.build_environment(EnvSpec())  # refused before any request


def test_each_kind_of_call_has_its_own_client_and_timeout():
    backend = DockerBackend("unix:///run/deepdock-no-such.sock")
    assert (CONTROL_TIMEOUT_S, ARCHIVE_TIMEOUT_S, IMAGE_TRANSFER_TIMEOUT_S) == (10, 120, 1800)
    assert backend._api.timeout == CONTROL_TIMEOUT_S
    assert backend._archive_api.timeout == ARCHIVE_TIMEOUT_S
    assert backend._image_api.timeout == IMAGE_TRANSFER_TIMEOUT_S
    assert len({id(backend._api), id(backend._archive_api), id(backend._image_api)}) == 3
    backend.close()


def test_ports_are_published_on_every_address_with_an_engine_chosen_host_port():
    assert port_bindings([8080, 9000]) == {8080: ("0.0.0.0",), 9000: ("0.0.0.0",)}


def test_published_ports_from_inspect():
    data = {"NetworkSettings": {"Ports": {
        "8080/tcp": [{"HostIp": "::", "HostPort": "49154"}, {"HostIp": "0.0.0.0", "HostPort": "49153"}],
        "9000/tcp": [{"HostIp": "::", "HostPort": "49155"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
        "7000/tcp": None,  # exposed, not published
    }}}
    assert published_ports(data) == {8080: 49153, 9000: 49155}
    assert published_ports({"NetworkSettings": {"Ports": {}}}) == {}
    assert published_ports({}) == {}


def test_a_frozen_engine_is_unreachable_after_the_timeout_of_that_kind_of_call():
    # A listener that accepts and never answers: what a SIGSTOPped dockerd looks like to a client.
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        url = f"tcp://127.0.0.1:{frozen.getsockname()[1]}"
        backend = DockerBackend(url, timeout_s=0.3, archive_timeout_s=0.6)
        for call, timeout_s in ((backend.ping, 0.3), (lambda: backend.copy_out("c1", "/out"), 0.6)):
            t0 = time.monotonic()
            with pytest.raises(EngineUnreachableError, match=url):
                call()
            assert timeout_s <= time.monotonic() - t0 < timeout_s + 2.0
        backend.close()


def test_build_environment_builds_offline_with_a_long_timeout_client_of_this_engine(monkeypatch):
    seen: dict[str, object] = {}

    class Result:
        tag = "deepdock/env:0123456789abcdef"

    def fake_build_env(spec, *, docker_client, offline, progress):
        seen.update(spec=spec, base_url=docker_client.api.base_url, timeout=docker_client.api.timeout,
                    version=docker_client.api._version, offline=offline, progress=progress)
        return Result()

    monkeypatch.setattr(deepdock.envs, "build_env", fake_build_env)
    backend = DockerBackend("tcp://127.0.0.1:1")
    env, progress = EnvSpec(pip=["six"]), print
    assert backend.build_environment(env, progress) == Result.tag
    assert seen == {"spec": env, "base_url": "http://127.0.0.1:1", "timeout": IMAGE_TRANSFER_TIMEOUT_S,
                    "version": "1.41", "offline": True, "progress": progress}
