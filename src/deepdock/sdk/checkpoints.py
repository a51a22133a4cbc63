"""Checkpoints and the stop signal: the contract that lets a preempted or failed job resume.

- ``save_checkpoint(state, step)`` writes the file under a temporary name, fsyncs it and renames it
  (``os.replace``), so a crash mid-write never leaves a corrupt latest; then it tells the server, which
  copies the file out of the container into the artifact store at once (the container may be gone
  before the job ends: a lost node keeps what was already copied).
- ``load_checkpoint()`` returns the newest checkpoint of this job: the server puts the latest one it
  stored into every later attempt's checkpoint folder, on whatever node that attempt runs.
- ``should_stop()`` turns True when SIGTERM arrives (a preemption, a user's stop, a runtime limit); the
  job then has the stop grace period (``DEEPDOCK_STOP_GRACE_S``) to save and exit. A job that exits after
  a preemption is queued again as PREEMPTED and resumes from its checkpoint.

torch objects are saved with ``torch.save`` when torch is importable, anything else with pickle.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import signal
import threading
from pathlib import Path
from typing import Any

from deepdock.sdk import protocol
from deepdock.sdk.context import DEFAULT_LOCAL_KEEP, LOCAL_KEEP_ENV, current
from deepdock.sdk.protocol import check_step
from deepdock.sdk.tracking import emit

CHECKPOINT_RE = re.compile(r"^ckpt-(\d{12})\.(pt|pkl)$")
TMP_PREFIX = ".tmp-"
HASH_CHUNK = 1 << 20

_stop = threading.Event()
_handler = {"installed": False}


def _on_stop(signum: int, _frame: object) -> None:
    _stop.set()


def install_stop_handler() -> bool:
    """Catch SIGTERM (and SIGINT) so the job can finish its step and save; only where no handler of the
    job's own is installed, and only from the main thread (Python's rule for signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    installed = False
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, _on_stop)
            installed = True
    _handler["installed"] = True
    return installed


def should_stop() -> bool:
    """True once the server (or a user) asked this job to stop: save a checkpoint and exit."""
    if not _handler["installed"]:
        install_stop_handler()
    return _stop.is_set()


def checkpoint_dir() -> Path:
    return current().checkpoint_dir


def save_checkpoint(state: Any, step: int | None = None) -> Path:
    """Write ``state`` atomically as this job's newest checkpoint and hand it to the server."""
    folder = checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if step is None:
        latest = _latest(folder)
        step = 0 if latest is None else _step_of(latest) + 1
    step = check_step(step)
    torch = _torch()
    name = f"ckpt-{step:012d}.{'pt' if torch is not None else 'pkl'}"
    final = folder / name
    tmp = folder / f"{TMP_PREFIX}{name}.{os.getpid()}"
    try:
        with tmp.open("wb") as out:
            if torch is not None:
                torch.save(state, out)
            else:
                pickle.dump(state, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    digest, size = _sha256(final)
    emit({"k": protocol.CHECKPOINT, "name": name, "s": step, "sha256": digest, "size": size})
    _prune(folder)
    return final


def load_checkpoint(path: str | Path | None = None) -> Any:
    """The newest checkpoint of this job (or ``path``), or None when there is none yet."""
    target = Path(path) if path is not None else _latest(checkpoint_dir())
    if target is None:
        return None
    if target.suffix == ".pt":
        torch = _torch()
        if torch is None:
            raise RuntimeError(f"checkpoint {target} was saved with torch, which this environment lacks")
        # The job's own file from an earlier attempt of the same job: full unpickling, like torch.load before 2.6.
        return torch.load(target, map_location="cpu", weights_only=False)
    with target.open("rb") as f:
        return pickle.load(f)  # noqa: S301 - the job's own checkpoint


def latest_checkpoint() -> Path | None:
    return _latest(checkpoint_dir())


def _latest(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name)]
    return max(found, key=_step_of) if found else None


def _step_of(path: Path) -> int:
    match = CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else -1


def _prune(folder: Path) -> None:
    keep = max(1, int(os.environ.get(LOCAL_KEEP_ENV, DEFAULT_LOCAL_KEEP) or DEFAULT_LOCAL_KEEP))
    found = sorted((p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name)), key=_step_of)
    for old in found[:-keep]:
        old.unlink(missing_ok=True)


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch
