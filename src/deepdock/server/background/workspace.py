"""The tar put into every job container's workdir: the user's code plus a writable artifacts folder."""

from __future__ import annotations

import io
import tarfile
import time

ARTIFACTS_SUBDIR = "artifacts"
# World-writable: the container is single-tenant and its user id is the image's choice, not ours.
WORKSPACE_DIR_MODE = 0o777


def workspace_archive(code: bytes | None) -> bytes:
    """Re-pack ``code`` (a tar, maybe gzipped) with writable folders and an empty ``artifacts/``."""
    out = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=out, mode="w") as dst:
        names: set[str] = set()
        if code:
            with tarfile.open(fileobj=io.BytesIO(code), mode="r:*") as src:
                for member in src.getmembers():
                    name = member.name.lstrip("./") or "."
                    if name == ".":
                        continue
                    member.name = name
                    if member.isdir():
                        member.mode = WORKSPACE_DIR_MODE
                    elif member.isfile():
                        member.mode |= 0o666
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
