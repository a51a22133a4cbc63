"""The artifact store interface: keys are relative posix paths, checked once here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from deepdock.errors import DeepdockError, SpecError


class ArtifactStoreError(DeepdockError):
    status_code = 502
    code = "artifact_store"


@dataclass(frozen=True)
class ArtifactInfo:
    key: str
    size: int
    modified_at: float


def validate_key(key: str) -> str:
    if not key or "\\" in key or "\x00" in key or key.startswith("/"):
        raise SpecError(f"artifact path {key!r} is not a relative path")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise SpecError(f"artifact path {key!r} may not have empty, '.' or '..' parts")
    return str(PurePosixPath(key))


class ArtifactStore(ABC):
    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...
    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...
    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...
    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...
    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None: ...
    @abstractmethod
    def stat(self, key: str) -> ArtifactInfo: ...
    @abstractmethod
    def exists(self, key: str) -> bool: ...
    @abstractmethod
    def list(self, prefix: str = "") -> list[ArtifactInfo]: ...
    @abstractmethod
    def delete(self, key: str) -> None: ...
    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...
    @abstractmethod
    def copy(self, src: str, dst: str) -> None: ...
