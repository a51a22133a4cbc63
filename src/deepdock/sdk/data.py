"""What data the job read: a content hash of each read-only mount, for the lineage of the models it makes.

The server cannot read a node's files, but the job can: on import inside a job, a background thread
hashes every file under each read-only volume (``DEEPDOCK_DATA_MOUNTS``, set by the start step) and
announces one tree hash per mount. Contents are hashed up to ``DEEPDOCK_DATA_HASH_BUDGET`` bytes in all
(1 GiB by default, ~1-2 s of one core); past the budget a file counts by its size and modification time
and the result says ``complete: false``. At exit the job waits up to ``EXIT_WAIT_S`` for the hash.
Standard library only.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from deepdock.sdk import protocol
from deepdock.sdk.tracking import emit

MOUNTS_ENV = "DEEPDOCK_DATA_MOUNTS"
BUDGET_ENV = "DEEPDOCK_DATA_HASH_BUDGET"
DEFAULT_BUDGET_BYTES = 1 << 30
CHUNK = 1 << 20
EXIT_WAIT_S = 30.0


def tree_hash(root: Path, budget: int) -> dict[str, Any]:
    """sha256 over (relative path, size, content sha256 — or size and mtime past the budget) of every
    regular file under ``root``, in sorted order; symbolic links are not followed."""
    digest = hashlib.sha256()
    files = total = hashed = 0
    complete = True
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_file() or path.is_symlink():
                continue
            files += 1
            total += st.st_size
            if hashed + st.st_size <= budget:
                content = hashlib.sha256()
                with path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        content.update(chunk)
                hashed += st.st_size
                part = content.hexdigest()
            else:
                complete = False
                part = f"size={st.st_size},mtime_ns={st.st_mtime_ns}"
            digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{part}\n".encode())
    return {"sha256": digest.hexdigest(), "files": files, "bytes": total, "hashed_bytes": hashed, "complete": complete}


def mounts() -> list[dict[str, Any]]:
    try:
        listed = json.loads(os.environ.get(MOUNTS_ENV, "[]"))
    except ValueError:
        return []
    return [m for m in listed if isinstance(m, dict) and m.get("read_only") and m.get("target")]


def hash_mounts() -> None:
    budget = int(os.environ.get(BUDGET_ENV, "") or DEFAULT_BUDGET_BYTES)
    for mount in mounts():
        root = Path(mount["target"])
        if not root.is_dir():
            continue
        result = tree_hash(root, budget)
        budget = max(0, budget - result["hashed_bytes"])
        emit({"k": protocol.DATA, "target": mount["target"], **result})


def start() -> threading.Thread | None:
    """Hash in the background (a job's first step is not held up); wait for it at exit."""
    if not mounts():
        return None
    thread = threading.Thread(target=hash_mounts, name="deepdock-sdk-data", daemon=True)
    thread.start()
    atexit.register(thread.join, EXIT_WAIT_S)
    return thread
