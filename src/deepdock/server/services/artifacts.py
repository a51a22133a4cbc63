"""A job's artifacts in the artifact store: written when an attempt is collected, listed and read back.

Keys: ``<job>/attempt-<n>/rank-<r>/<path>`` for what a job wrote to ``$DEEPDOCK_ARTIFACTS_DIR``,
``<job>/checkpoints/<name>`` for its checkpoints. With the default local store (``home/artifacts``)
these are the same folders as before the store existed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from deepdock.api import ArtifactOut
from deepdock.artifacts import ArtifactStore, validate_key
from deepdock.compute.workspace import folder_files
from deepdock.errors import NotFoundError
from deepdock.server.db.models import User

ATTEMPT_DIR_RE = re.compile(r"^attempt-\d+/rank-\d+/")


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    sha256: str


def artifacts_location(store: ArtifactStore) -> str:
    """Where a job's files are, for people: the folder of a local store, the URL of any other."""
    from deepdock.artifacts import LocalArtifactStore

    return str(store.root) if isinstance(store, LocalArtifactStore) else store.url


def attempt_prefix(job_id: str, attempt: int, rank: int) -> str:
    return f"{job_id}/attempt-{attempt}/rank-{rank}"


def store_tree(store: ArtifactStore, archive: bytes, prefix: str) -> dict[str, StoredFile]:
    """Put the regular files of a ``copy_out`` folder archive under ``prefix``; path → what was stored.

    The archive's top entry is the folder itself (docker cp), so its first path part is dropped; links,
    devices and anything that would leave the prefix never reach the store."""
    stored: dict[str, StoredFile] = {}
    for relative, data in folder_files(archive):
        key = validate_key(f"{prefix}/{relative}")
        store.put_bytes(key, data)
        stored[relative] = StoredFile(key, len(data), hashlib.sha256(data).hexdigest())
    return stored


def _job_id(session: Session, user: User, ref: str) -> str:
    from deepdock.server.services.jobs import get_job

    return get_job(session, user, ref).id


def list_artifacts(session: Session, store: ArtifactStore, user: User, ref: str) -> list[ArtifactOut]:
    job_id = _job_id(session, user, ref)
    session.close()  # the listing may be a network call (S3): never inside a transaction
    prefix = f"{job_id}/"
    return [ArtifactOut(path=info.key.removeprefix(prefix), size=info.size, modified_at=info.modified_at)
            for info in store.list(job_id)]


def artifact_key(session: Session, user: User, ref: str, path: str) -> str:
    """The store key of a job's artifact ``path`` (as ``artifacts ls`` shows it, or relative to the
    latest attempt's rank 0: ``model.pt`` means ``attempt-N/rank-0/model.pt``)."""
    from deepdock.server.services.jobs import get_job

    job = get_job(session, user, ref)
    relative = validate_key(path)
    if not ATTEMPT_DIR_RE.match(relative) and not relative.startswith("checkpoints/"):
        relative = f"attempt-{max(job.attempt_count, 1)}/rank-0/{relative}"
    return f"{job.id}/{relative}"


def read_artifact(store: ArtifactStore, key: str) -> Iterator[bytes]:
    try:
        return store.iter_chunks(key)
    except NotFoundError:
        job, _, path = key.partition("/")
        raise NotFoundError(f"job {job} has no artifact {path!r}") from None
