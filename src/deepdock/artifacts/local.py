"""A folder as the artifact store: atomic writes (temp file, fsync, rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deepdock.artifacts.base import ArtifactInfo, ArtifactStore, validate_key
from deepdock.errors import NotFoundError

TMP_PREFIX = ".tmp-"


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri() if self.root.is_absolute() else f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write(self, key: str, fill) -> None:  # type: ignore[no-untyped-def]
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> None:
        def fill(out) -> None:  # type: ignore[no-untyped-def]
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out)
        self._write(key, fill)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"no artifact {key!r}")
        return path

    def get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._existing(key)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(chunk_size):
                    yield chunk
        return chunks()

    def get_file(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._existing(key), dest)

    def stat(self, key: str) -> ArtifactInfo:
        st = self._existing(key).stat()
        return ArtifactInfo(validate_key(key), st.st_size, st.st_mtime)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(TMP_PREFIX):
                st = path.stat()
                out.append(ArtifactInfo(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime))
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        items = self.list(prefix)
        for item in items:
            self.delete(item.key)
        return len(items)

    def copy(self, src: str, dst: str) -> None:
        self.put_file(dst, self._existing(src))
