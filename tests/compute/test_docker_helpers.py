"""Pure helpers of the Docker backend: code archive rewrite, user resolution, docker time parsing."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from deepdock.compute.docker.archive import (
    is_root_user,
    read_single_file,
    rebuild_archive,
    resolve_user,
    split_workdir,
)
from deepdock.compute.docker.backend import parse_docker_time
from deepdock.errors import SpecError

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
