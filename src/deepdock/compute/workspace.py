"""The one code + artifacts archive format: what goes into a job's workdir, and how a folder comes back.

``workspace_archive`` packs the user's code with a writable, empty ``artifacts/`` folder; the backend
extracts it into ``ContainerSpec.workdir`` before start. After the job, ``FileTransfer.copy_out`` of
``<workdir>/artifacts`` gives a tar whose top entry is the folder itself, and ``extract_tree`` unpacks
its contents (not the folder name) into the artifact store. Pure: bytes in, bytes or files out.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

ARTIFACTS_SUBDIR = "artifacts"
# World-writable: the container is single-tenant and its user id is the image's choice, not ours.
WORKSPACE_DIR_MODE = 0o777
# Files become writable by anyone for the same reason (a job may rewrite its own code or outputs).
WORKSPACE_FILE_MODE_BITS = 0o666


def workspace_archive(code: bytes | None, extra: dict[str, bytes] | None = None) -> bytes:
    """Re-pack ``code`` (a tar, maybe gzipped) with writable folders and an empty ``artifacts/``, plus
    ``extra`` files (relative path → content: the SDK, a checkpoint to resume from) that win over the code's."""
    out = io.BytesIO()
    now = time.time()
    extra = {name: data for name, data in (extra or {}).items() if _member_name(name) is not None}
    with tarfile.open(fileobj=out, mode="w") as dst:
        names: set[str] = set()
        extra_dirs = _extra_dirs(extra)
        _add_extra(dst, extra, now)
        if code:
            with tarfile.open(fileobj=io.BytesIO(code), mode="r:*") as src:
                for member in src.getmembers():
                    name = _member_name(member.name)
                    if name is None or name in extra or (member.isdir() and name in extra_dirs):
                        continue
                    member.name = name
                    if member.islnk():
                        link = _member_name(member.linkname)
                        if link is None:
                            continue
                        member.linkname = link
                    if member.isdir():
                        member.mode = WORKSPACE_DIR_MODE
                    elif member.isfile():
                        member.mode |= WORKSPACE_FILE_MODE_BITS
                    member.uid = member.gid = 0
                    member.uname = member.gname = ""
                    names.add(name)
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        if ARTIFACTS_SUBDIR not in names:
            info = tarfile.TarInfo(ARTIFACTS_SUBDIR)
            info.type = tarfile.DIRTYPE
            info.mode = WORKSPACE_DIR_MODE
            info.mtime = int(now)
            dst.addfile(info)
    return out.getvalue()


def _extra_dirs(extra: dict[str, bytes]) -> set[str]:
    return {str(parent) for name in extra for parent in PurePosixPath(name).parents if str(parent) != "."}


def _add_extra(dst: tarfile.TarFile, extra: dict[str, bytes], now: float) -> None:
    made: set[str] = set()
    for name in sorted(extra):
        for parent in reversed(PurePosixPath(name).parents):
            folder = str(parent)
            if folder != "." and folder not in made:
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, WORKSPACE_DIR_MODE, int(now)
                dst.addfile(info)
                made.add(folder)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(extra[name]), 0o644 | WORKSPACE_FILE_MODE_BITS, int(now)
        dst.addfile(info, io.BytesIO(extra[name]))


def _member_name(name: str) -> str | None:
    """A member's name relative to the workdir, exactly as packed but for a leading '/' or './'
    ('./.env' -> '.env', '/a/./b' -> 'a/b'); None for the root itself and for anything with a '..' part,
    which would land outside the workdir (the server refuses those at upload; this is the last guard)."""
    path = PurePosixPath(name.lstrip("/"))  # pathlib drops '.' parts and doubled or trailing slashes
    if ".." in path.parts or str(path) == ".":
        return None
    return str(path)


def folder_files(archive: bytes) -> Iterator[tuple[str, bytes]]:
    """The regular files of a ``copy_out`` folder archive as (path inside the folder, content): the top
    entry (the folder's own name) dropped, links and devices skipped, nothing with a '..' part."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts[1:]
            if not parts or not member.isfile() or ".." in parts:
                continue
            f = tar.extractfile(member)
            assert f is not None
            yield str(PurePosixPath(*parts)), f.read()


def extract_tree(archive: bytes, dest: Path) -> int:
    """Unpack the contents of a ``copy_out`` folder archive into ``dest``; returns the number of files.

    The archive's top entry is the folder's own name (as ``docker cp`` makes it), so the first path
    part is dropped. Only regular files and directories are kept - a job's links or devices never
    reach the host - and tarfile's ``data`` filter refuses anything escaping ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        members = []
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts[1:]
            if not parts or not (member.isfile() or member.isdir()):
                continue
            member.name = str(PurePosixPath(*parts))
            members.append(member)
            count += member.isfile()
        tar.extractall(dest, members=members, filter="data")
    return count
