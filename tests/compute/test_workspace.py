"""The workspace archive format: what goes into a job's workdir, and how a copied-out folder comes back."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from deepdock.compute.workspace import ARTIFACTS_SUBDIR, WORKSPACE_DIR_MODE, extract_tree, workspace_archive


def _tar(entries: dict[str, bytes | None], *, gz: bool = False, mode: int = 0o600) -> bytes:
    """name -> content (None: a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.uname = 1234, 1234, "someone"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue()) if gz else buf.getvalue()


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_without_code_only_an_empty_writable_artifacts_folder():
    members = _members(workspace_archive(None))
    assert list(members) == [ARTIFACTS_SUBDIR]
    assert members[ARTIFACTS_SUBDIR].isdir() and members[ARTIFACTS_SUBDIR].mode == WORKSPACE_DIR_MODE
    assert list(_members(workspace_archive(b""))) == [ARTIFACTS_SUBDIR]


@pytest.mark.parametrize("gz", [False, True])
def test_code_is_repacked_writable_root_owned_with_artifacts(gz):
    code = _tar({".": None, "./train.py": b"print(1)\n", "pkg": None, "pkg/util.py": b"x = 1\n"}, gz=gz)
    members = _members(workspace_archive(code))
    assert list(members) == ["train.py", "pkg", "pkg/util.py", ARTIFACTS_SUBDIR]
    assert members["pkg"].mode == WORKSPACE_DIR_MODE
    assert members["train.py"].mode & 0o666 == 0o666
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members.values()
               if m.name != ARTIFACTS_SUBDIR)
    with tarfile.open(fileobj=io.BytesIO(workspace_archive(code))) as tar:
        extracted = tar.extractfile("pkg/util.py")
        assert extracted is not None and extracted.read() == b"x = 1\n"


def test_an_artifacts_folder_of_the_code_is_kept_not_doubled():
    members = _members(workspace_archive(_tar({"artifacts": None, "artifacts/seed.txt": b"s"})))
    assert list(members) == ["artifacts", "artifacts/seed.txt"]


def test_names_are_kept_exactly_but_for_a_leading_dot_slash():
    code = _tar({"./.env": b"A=1", ".config": None, ".config/settings.toml": b"x", "./..foo": b"f",
                 "a/.hidden": b"h", "/abs.txt": b"a", "./b/./c.txt": b"c"})
    members = _members(workspace_archive(code))
    assert list(members) == [".env", ".config", ".config/settings.toml", "..foo", "a/.hidden", "abs.txt", "b/c.txt",
                             ARTIFACTS_SUBDIR]
    with tarfile.open(fileobj=io.BytesIO(workspace_archive(code))) as tar:
        extracted = tar.extractfile(".env")
        assert extracted is not None and extracted.read() == b"A=1"


def test_a_member_with_a_parent_part_never_reaches_the_workspace():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name in ("./ok.txt", "../up.txt", "a/../../up2.txt", "a/../b.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
        for name, target in (("./same.txt", "./ok.txt"), ("out.txt", "../etc/passwd")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.LNKTYPE, target
            tar.addfile(link)
    members = _members(workspace_archive(buf.getvalue()))
    assert list(members) == ["ok.txt", "same.txt", ARTIFACTS_SUBDIR]
    assert members["same.txt"].linkname == "ok.txt"  # a hard link names its target as the workspace does


def test_extract_tree_drops_the_top_folder_and_counts_files(tmp_path: Path):
    archive = _tar({"artifacts": None, "artifacts/model.pt": b"weights", "artifacts/logs": None,
                    "artifacts/logs/train.txt": b"epoch 1\n"})
    assert extract_tree(archive, tmp_path / "out") == 2
    assert (tmp_path / "out" / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / "out" / "logs" / "train.txt").read_bytes() == b"epoch 1\n"
    assert not (tmp_path / "out" / "artifacts").exists()


def test_extract_tree_of_an_empty_folder_makes_dest(tmp_path: Path):
    assert extract_tree(_tar({"artifacts": None}), tmp_path / "empty") == 0
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_extract_tree_keeps_only_files_and_folders_and_nothing_escapes(tmp_path: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name, target in (("top/link", "/etc/passwd"), ("top/hard", "top/ok.txt")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE if name.endswith("link") else tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
        fifo = tarfile.TarInfo("top/fifo")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
        ok = tarfile.TarInfo("top/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
    assert extract_tree(buf.getvalue(), tmp_path / "d") == 1
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["ok.txt"]
    escaping = _tar({"top/../../evil.txt": b"x"})
    with pytest.raises(tarfile.FilterError):
        extract_tree(escaping, tmp_path / "e")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_tree_reads_gzip_too(tmp_path: Path):
    assert extract_tree(_tar({"a/b.txt": b"b"}, gz=True), tmp_path) == 1
    assert (tmp_path / "b.txt").read_bytes() == b"b"


def test_extra_files_join_the_code_and_win_over_it():
    import io
    import tarfile

    from deepdock.compute.workspace import workspace_archive

    code = io.BytesIO()
    with tarfile.open(fileobj=code, mode="w:gz") as tar:
        for name, data in ((".deepdock/export/model.pt", b"model"), (".deepdock/python/deepdock/sdk/x.py", b"old"),
                           ("train.py", b"print()")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = workspace_archive(code.getvalue(), {".deepdock/python/deepdock/sdk/x.py": b"new",
                                                  ".deepdock/checkpoints/ckpt.pt": b"state"})
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        dirs = [m.name for m in tar.getmembers() if m.isdir()]
    assert files == {".deepdock/export/model.pt": b"model", ".deepdock/python/deepdock/sdk/x.py": b"new",
                     ".deepdock/checkpoints/ckpt.pt": b"state", "train.py": b"print()"}
    assert len(dirs) == len(set(dirs))
