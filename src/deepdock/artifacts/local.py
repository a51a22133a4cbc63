"""A folder as the artifact store: the default, so a single machine needs no object storage.

Every write goes to a temp file in the target's own folder, is fsynced and then renamed over the key,
so a crash (or a failed write) never leaves a half-written file under a key's name and a reader sees
either the old or the new version. Temp names are unique per write, so concurrent writers of different
keys (or even the same key) never share a file, and there is no lock to hold.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from deepdock.artifacts.base import DEFAULT_CHUNK_SIZE, ArtifactInfo, ArtifactStore, validate_key, validate_prefix
from deepdock.errors import ConflictError, NotFoundError, SpecError

# Names a write uses before its rename; ``list`` never shows them and no key may use them.
TMP_PREFIX = ".deepdock-tmp-"
# A concurrent delete may remove a just-created empty folder before the temp file lands in it.
_CREATE_TRIES = 5


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; a filesystem that cannot fsync a folder still renamed atomically."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    # --- keys and paths

    def _path(self, key: str) -> Path:
        key = validate_key(key)
        if any(part.startswith(TMP_PREFIX) for part in key.split("/")):
            raise SpecError(f"artifact key {key!r}: names starting with {TMP_PREFIX!r} are reserved")
        path = self.root / key
        # validate_key already refuses '..'; this catches a symlink inside the root that points out of it.
        if not path.resolve().is_relative_to(self.root):
            raise SpecError(f"artifact key {key!r} leads outside the store at {self.url}")
        return path

    def _folder(self, prefix: str) -> Path:
        prefix = validate_prefix(prefix)
        return self._path(prefix) if prefix else self.root

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"no artifact {key!r} in {self.url}")
        return path

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _name(self, path: Path) -> str:
        """For messages: the key of a path in the store, or the path itself (``get_file``'s dest)."""
        return repr(self._key_of(path)) if path.is_relative_to(self.root) else str(path)

    # --- writes

    def _create_temp(self, target: Path) -> tuple[int, Path]:
        for attempt in range(_CREATE_TRIES):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
                # os.open (not mkstemp) so the file gets the umask's usual mode, not 0600.
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
            except FileNotFoundError:
                if attempt == _CREATE_TRIES - 1:
                    raise
            except (FileExistsError, NotADirectoryError):
                raise ConflictError(f"cannot write {self._name(target)}: a folder on its path is a file") from None
        raise AssertionError("unreachable")

    def _write(self, key: str, fill: Callable[[BinaryIO], Any]) -> None:
        self._write_path(self._path(key), fill)

    def _write_path(self, target: Path, fill: Callable[[BinaryIO], Any]) -> None:
        fd, tmp = self._create_temp(target)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.replace(tmp, target)
            except IsADirectoryError:
                raise ConflictError(f"cannot write {self._name(target)}: it is a folder") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda out: shutil.copyfileobj(src, out, DEFAULT_CHUNK_SIZE))

    def copy(self, src: str, dst: str) -> None:
        target = self._path(dst)
        with self._existing(src).open("rb") as source:
            self._write_path(target, lambda out: shutil.copyfileobj(source, out, DEFAULT_CHUNK_SIZE))

    # --- reads

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._existing(key).read_bytes()
        except FileNotFoundError:  # deleted between the check and the read
            raise NotFoundError(f"no artifact {key!r} in {self.url}") from None

    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        # Opened here, not in the generator, so a missing key fails at the call (before a response starts);
        # an open file also keeps its content readable if the key is replaced or deleted meanwhile.
        try:
            f = self._existing(key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {key!r} in {self.url}") from None

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(chunk_size):
                    yield chunk

        return chunks()

    def get_file(self, key: str, dest: Path) -> None:
        dest = Path(dest)
        with self._existing(key).open("rb") as source:
            # The same temp-and-rename as a store write, so dest is never left half-written either.
            self._write_path(dest.resolve(), lambda out: shutil.copyfileobj(source, out, DEFAULT_CHUNK_SIZE))

    def stat(self, key: str) -> ArtifactInfo:
        try:
            st = self._existing(key).stat()
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {key!r} in {self.url}") from None
        return ArtifactInfo(validate_key(key), st.st_size, st.st_mtime)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _files(self, folder: Path) -> Iterator[os.DirEntry[str]]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX):
                continue
            # Symlinks are neither listed nor followed: nothing the store did not write shows up in it.
            if entry.is_dir(follow_symlinks=False):
                yield from self._files(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        infos = []
        for entry in self._files(self._folder(prefix)):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted while listing
                continue
            infos.append(ArtifactInfo(self._key_of(Path(entry.path)), st.st_size, st.st_mtime))
        return sorted(infos, key=lambda info: info.key)

    # --- deletes

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and its parents while empty, up to (not including) the root, so deleted
        keys leave no folders behind - as on S3, where folders exist only through their objects."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or a writer just used it): it stays
                return
            folder = folder.parent

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._folder(prefix)
        removed = 0
        for entry in self._files(folder):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
        # Bottom-up, and only the folders that are empty now: a concurrent writer's new file is kept.
        for dirpath, _dirs, _files in os.walk(folder, topdown=False):
            if Path(dirpath) != folder:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
        self._prune(folder)
        return removed
