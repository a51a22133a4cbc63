"""Preparing the user's code for ``put_archive``, and resolving the container user's numeric ids.

The code goes into ``workdir`` before the container starts. Docker extracts with the ownership in the
tar headers, so the archive is rewritten: every entry is owned by the container user, and the workdir
itself is included as the top entry (extracted at its parent) so that the user can write next to its code.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile

from deepdock.errors import SpecError

# Permission bits forced onto extracted entries: readable by everyone, writable by the owner.
DIR_MODE = 0o755
MIN_FILE_MODE = 0o644


def split_workdir(workdir: str) -> tuple[str, str]:
    """``/a/b/workspace`` -> (``/a/b``, ``workspace``). The workdir must be absolute and not ``/``."""
    clean = posixpath.normpath(workdir)
    if not clean.startswith("/") or clean == "/":
        raise SpecError(f"workdir must be an absolute path below / (got {workdir!r})")
    return posixpath.dirname(clean), posixpath.basename(clean)


def _safe_name(name: str) -> str | None:
    """Member name relative to the workdir, or None for entries that would escape it."""
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in (".", "") or clean.startswith("../") or clean == "..":
        return None
    return clean


def rebuild_archive(code_archive: bytes | None, workdir: str, uid: int, gid: int) -> tuple[str, bytes]:
    """Return (path to extract at, tar bytes) holding ``workdir`` and the code, owned by ``uid:gid``.

    ``code_archive`` may be a plain or gzip-compressed tar, or None (then only the workdir entry).
    Links and device files are dropped: a job's code is regular files and directories.
    """
    parent, base = split_workdir(workdir)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as dst:
        top = tarfile.TarInfo(base)
        top.type = tarfile.DIRTYPE
        top.mode = DIR_MODE
        top.uid, top.gid = uid, gid
        dst.addfile(top)
        if code_archive is not None:
            raw = gzip.decompress(code_archive) if code_archive[:2] == b"\x1f\x8b" else code_archive
            try:
                with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as src:
                    for member in src.getmembers():
                        name = _safe_name(member.name)
                        if name is None or not (member.isfile() or member.isdir()):
                            continue
                        info = tarfile.TarInfo(posixpath.join(base, name))
                        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                        info.mtime = member.mtime
                        if member.isdir():
                            info.type, info.mode = tarfile.DIRTYPE, DIR_MODE
                            dst.addfile(info)
                        else:
                            info.mode = member.mode | MIN_FILE_MODE
                            info.size = member.size
                            dst.addfile(info, src.extractfile(member))
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise SpecError(f"code archive is not a valid tar or tar.gz: {exc}") from exc
    return parent, out.getvalue()


def volume_roots_archive(targets: list[str], uid: int, gid: int) -> bytes:
    """A tar, to extract at '/', whose only entries are the folders ``targets`` owned by ``uid:gid``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as dst:
        for target in targets:
            info = tarfile.TarInfo(posixpath.normpath(target).lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, DIR_MODE
            info.uid, info.gid = uid, gid
            dst.addfile(info)
    return out.getvalue()


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(user: str, passwd: str, group: str) -> tuple[int, int]:
    """Numeric (uid, gid) of a docker ``user`` string (``name``, ``uid``, ``name:group``, ``uid:gid``).

    Looked up in the image's /etc/passwd and /etc/group like the engine does; a numeric uid unknown
    to passwd gets gid 0, as docker gives it. An unknown name is a spec error, caught before start.
    """
    name, _, grp = user.partition(":")
    users = _table(passwd)
    uid: int | None = None
    gid = 0
    for row in users:
        if len(row) >= 4 and (row[0] == name or row[2] == name):
            uid, gid = int(row[2]), int(row[3])
            break
    if uid is None:
        if not name.isdigit():
            raise SpecError(f"user {name!r} does not exist in the image's /etc/passwd")
        uid = int(name)
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            match = [row for row in _table(group) if len(row) >= 3 and row[0] == grp]
            if not match:
                raise SpecError(f"group {grp!r} does not exist in the image's /etc/group")
            gid = int(match[0][2])
    return uid, gid


def is_root_user(user: str) -> bool:
    """Whether a docker ``user`` string means root (empty means the default, which is root)."""
    name = user.partition(":")[0]
    return name in ("", "root", "0")


def read_single_file(tar_stream: bytes) -> str:
    """The content of the one file in a ``get_archive`` answer, as text."""
    with tarfile.open(fileobj=io.BytesIO(tar_stream), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                return extracted.read().decode(errors="replace") if extracted else ""
    return ""
