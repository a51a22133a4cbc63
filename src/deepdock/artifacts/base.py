"""The artifact store protocol: one small abstract class, so the server never cares where files live.

Keys are posix paths relative to the store's root, checked by ``validate_key`` before any store touches
them, so a key can never name something outside the store on any backend. A prefix names a folder:
``"a/b"`` covers ``"a/b/c"`` but not ``"a/bc"``.

Errors are always from ``deepdock.errors`` (``ArtifactStoreError`` included):

- ``NotFoundError``      - reading, stating or copying a key that does not exist.
- ``SpecError``          - a malformed key, prefix or store URL.
- ``ConflictError``      - (local store) a key whose path runs through a file, or that is itself a folder.
- ``ArtifactStoreError`` - the store itself failed or could not be reached (S3 down, credentials refused).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deepdock.errors import ArtifactStoreError, SpecError  # noqa: F401 - ArtifactStoreError re-exported

DEFAULT_CHUNK_SIZE = 1 << 20
# S3's own limit on a key; the local store keeps to it too, so a key valid on one store is valid on both.
MAX_KEY_BYTES = 1024
# Most filesystems' limit on one path part.
MAX_PART_BYTES = 255


@dataclass(frozen=True)
class ArtifactInfo:
    key: str  # posix path relative to the store root
    size: int
    modified_at: float  # epoch seconds


def validate_key(key: str) -> str:
    """``key`` as every store uses it, or ``SpecError`` saying what is wrong with it.

    Nothing is silently rewritten (``a//b`` or ``./a`` are refused, not tidied), so two different
    strings never end up naming the same object."""
    if not isinstance(key, str):
        raise SpecError(f"artifact key must be a string, got {type(key).__name__}")
    if not key:
        raise SpecError("artifact key is empty")
    if "\x00" in key:
        raise SpecError(f"artifact key {key!r} contains a NUL character")
    if "\\" in key:
        raise SpecError(f"artifact key {key!r} contains a backslash: use '/' to separate folders")
    if key.startswith("/"):
        raise SpecError(f"artifact key {key!r} is absolute: keys are relative to the store root")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise SpecError(f"artifact key {key[:60]!r}... is longer than {MAX_KEY_BYTES} bytes")
    for part in key.split("/"):
        if part == "":
            raise SpecError(f"artifact key {key!r} has an empty path part ('//' or a trailing '/')")
        if part in (".", ".."):
            raise SpecError(f"artifact key {key!r} has a {part!r} part: keys must not be relative paths")
        if len(part.encode()) > MAX_PART_BYTES:
            raise SpecError(f"artifact key {key!r} has a part longer than {MAX_PART_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """A folder prefix: ``""`` (the whole store) or a valid key; one trailing ``/`` is allowed and dropped,
    since ``"a/b/"`` and ``"a/b"`` name the same folder."""
    if prefix == "":
        return ""
    return validate_key(prefix[:-1] if prefix.endswith("/") else prefix)


class ArtifactStore(ABC):
    """Where job artifacts, checkpoints and model files live. Implementations are safe to share between threads."""

    url: str  # for display: "file:///root/.deepdock/artifacts" or "s3://bucket/prefix"

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``, replacing what was there; readers see the old or the new, never a mix."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Write the file at ``path`` under ``key``, streamed (never read whole into memory)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object; ``NotFoundError`` when missing."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The object in chunks of at most ``chunk_size`` bytes. A missing key raises ``NotFoundError`` from
        this call itself, before any chunk, so a caller can still answer 404 before it starts a response."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Write the object to ``dest`` (its folder is created); ``NotFoundError`` when missing."""

    @abstractmethod
    def stat(self, key: str) -> ArtifactInfo:
        """Size and modification time; ``NotFoundError`` when missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        """Every object in the folder ``prefix`` and below, sorted by key; ``[]`` when there is none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing key is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object in the folder ``prefix`` and below; how many were removed."""

    @abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` without passing the data through the caller where the store can
        (server-side on S3); ``NotFoundError`` when ``src`` is missing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
