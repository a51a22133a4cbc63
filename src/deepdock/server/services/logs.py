"""Job logs kept by the server, one file per replica and attempt, so they outlive the containers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from deepdock.api.enums import JobStatus
from deepdock.compute.base import ComputeBackend
from deepdock.errors import DeepdockError, NotFoundError
from deepdock.server.db.models import Job, User
from deepdock.server.db.session import Database

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
            # Nothing to send, but the reader's thread comes back: a reader that went away (a closed
            # dashboard page) or a server shutting down ends the follow within a poll, not when the job does.
            yield b""


def without_events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The job's own output: the SDK's event lines (sdk/protocol.py) are for the server, not the reader."""
    from deepdock.sdk.protocol import strip_events

    pending = b""
    for chunk in chunks:
        if not chunk:
            yield chunk
            continue
        data = pending + chunk
        end = data.rfind(b"\n")
        if end < 0:
            pending = data
            continue
        pending = data[end + 1:]
        # Empty when the chunk held only the SDK's events: still yielded, for the reason in stream().
        yield strip_events(data[: end + 1])
    if pending:
        yield strip_events(pending)


def follow_key(container_id: str) -> str:
    return f"follow:{container_id}"


def follow_logs(store: LogStore, backend: ComputeBackend, container_id: str, path: Path) -> None:
    """A follower task (background/tasks.py): copy a running container's output into the store."""
    try:
        store.capture(backend, container_id, path, follow=True)
    except DeepdockError:
        pass  # the collect step's final capture writes what is there


def job_log(db: Database, store: LogStore, user: User, ref: str, *, attempt: int | None, rank: int,
            follow: bool) -> Iterator[bytes]:
    """A job's log as kept by the server: all of it, or followed until the attempt ends."""
    from deepdock.server.services.jobs import get_job

    with db.session() as session:
        job = get_job(session, user, ref)
        job_id, count = job.id, job.attempt_count
    if attempt is not None and attempt > max(count, 1):
        raise NotFoundError(f"job {job_id} has no attempt {attempt}")
    number = attempt or count
    if number < 1:
        if not follow:
            return iter([b""])
        number = 1  # wait for the first attempt's output
    path = store.path(job_id, number, rank)
    if not follow:
        return without_events(iter([store.read(path)]))

    def is_done() -> bool:
        with db.session() as session:
            current = session.get(Job, job_id)
            if current is None or JobStatus(current.status).terminal:
                return True
            # A newer attempt started (retry/preemption): this attempt's log is complete.
            return current.attempt_count > number and current.status != JobStatus.QUEUED

    return without_events(store.stream(path, is_done))
