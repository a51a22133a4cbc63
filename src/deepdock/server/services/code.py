"""User code packages: tarballs uploaded by the CLI, stored content-addressed on the server's disk."""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import tarfile
import zlib
from pathlib import Path

from sqlalchemy.orm import Session

from deepdock.api import CodeOut
from deepdock.errors import NotFoundError, PayloadTooLargeError, SpecError
from deepdock.server.db.models import CodeBlob


def code_path(root: Path, sha256: str) -> Path:
    return root / "code" / f"{sha256}.tar.gz"


def store_code(session: Session, root: Path, data: bytes, max_bytes: int) -> CodeOut:
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"code package is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise SpecError(f"code package member {member.name!r} escapes the code folder")
    # A truncated or corrupt compressed stream fails in the decompressor, not in tarfile.
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise SpecError(f"code package is not a readable tar archive: {exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    path = code_path(root, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a package
    blob = session.get(CodeBlob, sha)
    if blob is None:
        blob = CodeBlob(sha256=sha, size=len(data))
        session.add(blob)
        session.flush()
    return CodeOut(sha256=blob.sha256, size=blob.size)


def read_code(root: Path, sha256: str) -> bytes:
    path = code_path(root, sha256)
    if not path.exists():
        raise NotFoundError(f"code package {sha256[:12]} is not stored on this server")
    return path.read_bytes()
