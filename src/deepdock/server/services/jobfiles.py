"""What the server puts into a job's workdir beside its code: the SDK, and the checkpoint to resume from.

The SDK travels with every job instead of living in its image, so any image with a Python gets
``from deepdock import sdk`` without a rebuild, always at the server's own version. It is the
standard-library-only folder ``deepdock/sdk`` plus the package's ``__init__`` (which imports nothing).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

PYTHON_SUBDIR = ".deepdock/python"


@lru_cache(maxsize=1)
def sdk_files() -> dict[str, bytes]:
    package = resources.files("deepdock")
    files = {f"{PYTHON_SUBDIR}/deepdock/__init__.py": package.joinpath("__init__.py").read_bytes()}
    for entry in package.joinpath("sdk").iterdir():
        if entry.name.endswith(".py"):
            files[f"{PYTHON_SUBDIR}/deepdock/sdk/{entry.name}"] = entry.read_bytes()
    return files


def python_path(workdir: str, existing: str | None) -> str:
    ours = f"{workdir.rstrip('/')}/{PYTHON_SUBDIR}"
    return f"{ours}:{existing}" if existing else ours
