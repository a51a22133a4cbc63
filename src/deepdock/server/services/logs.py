"""Job logs kept by the server, one file per replica and attempt, so they outlive the containers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from deepdock.compute.base import ComputeBackend
from deepdock.errors import DeepdockError

FOLLOW_POLL_S = 0.2
READ_CHUNK_BYTES = 64 * 1024


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, job_id: str, attempt: int, rank: int = 0) -> Path:
        return self.root / job_id / f"attempt-{attempt}-rank-{rank}.log"

    def capture(self, backend: ComputeBackend, container_id: str, path: Path, *, follow: bool) -> None:
        """Write the container's whole output to ``path`` (docker replays from the start, so the file is
        rewritten rather than appended: a restarted server re-captures without duplicating lines)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for chunk in backend.logs(container_id, follow=follow):
                out.write(chunk)
                out.flush()

    def read(self, path: Path, offset: int = 0) -> bytes:
        if not path.exists():
            return b""
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()

    def stream(self, path: Path, is_done) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
        """Yield the file's content, then new content as it grows, until ``is_done()`` and all is read."""
        offset = 0
        while True:
            done = is_done()  # read before the file, so nothing written after 'done' is missed
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    while chunk := f.read(READ_CHUNK_BYTES):
                        offset += len(chunk)
                        yield chunk
            if done:
                return
            threading.Event().wait(FOLLOW_POLL_S)


class LogFollowers:
    """One thread per running container copying its output into the store while it runs."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def follow(self, backend: ComputeBackend, container_id: str, path: Path) -> None:
        with self._lock:
            if container_id in self._threads and self._threads[container_id].is_alive():
                return
            thread = threading.Thread(
                target=self._run, args=(backend, container_id, path), name=f"logs-{container_id[:12]}", daemon=True
            )
            self._threads[container_id] = thread
        thread.start()

    def _run(self, backend: ComputeBackend, container_id: str, path: Path) -> None:
        try:
            self.store.capture(backend, container_id, path, follow=True)
        except DeepdockError:
            pass  # the final capture after exit (finish) writes what is there

    def finish(self, backend: ComputeBackend, container_id: str, path: Path, timeout_s: float = 5.0) -> None:
        """Called once the container has exited: wait for the follower, or capture everything now."""
        with self._lock:
            thread = self._threads.pop(container_id, None)
        if thread is not None:
            thread.join(timeout_s)
            if not thread.is_alive() and path.exists():
                return
        self.store.capture(backend, container_id, path, follow=False)
