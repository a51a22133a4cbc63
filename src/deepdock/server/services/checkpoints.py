"""Checkpoints: copied out of the container as soon as the job announces one, kept (the last N) in the
artifact store, and put into every later attempt of the job, on whichever node it runs.

The copy happens while the job runs (the track step submits it in the node's lane) and once more when
its attempt is collected, so a lost node or a preempted job keeps the last checkpoint it saved.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api.enums import CheckpointStatus
from deepdock.artifacts import ArtifactStore
from deepdock.compute.abilities import FileTransfer
from deepdock.compute.base import ComputeBackend
from deepdock.errors import DeepdockError, NotFoundError
from deepdock.server.db.models import Checkpoint, now_s
from deepdock.server.db.session import Database
from deepdock.server.services.tracking import pending_checkpoints

# Where a job's checkpoints live inside its container, relative to the workdir (the SDK reads
# DEEPDOCK_CHECKPOINT_DIR, which the start step sets to this folder).
CHECKPOINT_SUBDIR = ".deepdock/checkpoints"


def checkpoint_key(job_id: str, name: str) -> str:
    return f"{job_id}/checkpoints/{name}"


def checkpoint_folder(workdir: str) -> str:
    return f"{workdir.rstrip('/')}/{CHECKPOINT_SUBDIR}"


def store_checkpoints(db: Database, store: ArtifactStore, backend: ComputeBackend, container_id: str, job_id: str,
                      attempt: int, rank: int, folder: str, keep: int) -> int:
    """Copy the replica's announced checkpoints into the store (I/O outside transactions); returns how many."""
    with db.session() as session:
        pending = [(c.id, c.name, c.sha256) for c in pending_checkpoints(session, job_id, attempt, rank)]
    if not pending or not isinstance(backend, FileTransfer):
        return 0
    stored = 0
    for checkpoint_id, name, sha256 in pending:
        status, key, error = CheckpointStatus.STORED, checkpoint_key(job_id, name), ""
        try:
            data = _single_file(backend.copy_out(container_id, f"{folder}/{name}"))
            if hashlib.sha256(data).hexdigest() != sha256:
                status, error = CheckpointStatus.FAILED, "content does not match the sha256 the job announced"
            else:
                store.put_bytes(key, data)
                stored += 1
        except NotFoundError:
            status, error = CheckpointStatus.MISSING, "removed by the job before it was copied"
        except DeepdockError as exc:
            if "container" in exc.message and "no such" in exc.message.lower():
                status, error = CheckpointStatus.MISSING, exc.message
            else:
                raise  # an engine hiccup: left pending, copied on the next try
        with db.session() as session:
            row = session.get(Checkpoint, checkpoint_id)
            if row is not None and row.status == CheckpointStatus.PENDING:
                row.status, row.error = status, error
                if status == CheckpointStatus.STORED:
                    row.key, row.stored_at = key, now_s()
    if stored:
        prune(db, store, job_id, keep)
    return stored


def _single_file(archive: bytes) -> bytes:
    """``copy_out`` of a file: an archive whose one entry is the file (a folder of one, to folder_files)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is not None:
                return f.read()
    raise NotFoundError("the checkpoint is not a regular file")


def stored_checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    """Newest first: the latest attempt's highest step leads (a restarted-from-scratch job's new
    checkpoints replace an older attempt's higher steps)."""
    return list(session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.status == CheckpointStatus.STORED)
        .order_by(Checkpoint.attempt.desc(), Checkpoint.step.desc(), Checkpoint.id.desc())
    ))


def latest_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    found = stored_checkpoints(session, job_id)
    return found[0] if found else None


def prune(db: Database, store: ArtifactStore, job_id: str, keep: int) -> None:
    with db.session() as session:
        rows = stored_checkpoints(session, job_id)
        kept_keys = {c.key for c in rows[:keep]}
        old = rows[keep:]
        for row in old:
            row.status = CheckpointStatus.PRUNED
        doomed = {c.key for c in old if c.key and c.key not in kept_keys}
    for key in doomed:
        store.delete(key)
