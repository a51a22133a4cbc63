"""Packaging a job's code folder: a deterministic tar.gz, minus what should never leave the machine.

What is left out, in gitignore syntax (https://git-scm.com/docs/gitignore), decided per path:

1. ``.deepdockignore`` at the root of the code folder, if there is one: the last pattern matching a path
   wins, as in git. A ``!pattern`` re-includes something the defaults below leave out (``!.env``).
2. Otherwise the defaults: ``DEFAULT_IGNORES`` (large or local: ``.git/``, ``.venv/``, caches) and
   ``SECRET_IGNORES`` (credentials by convention: ``.ssh/``, ``.aws/``, ``.env``...). The secrets left
   out are reported in ``CodePackage.skipped_secrets`` so the CLI can name them.

Patterns without a leading ``/`` match at any depth, so ``a/.env`` is a secret too. As in git, a folder
left out is not entered, so nothing under it can be re-included on its own. Symbolic links (to files or
folders) are never packaged, as before: one may point outside the folder (``~/.aws``), and a copy of its
target could carry what the ignores are there to keep out. Names are kept exactly (``.env`` stays
``.env``).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from deepdock.errors import SpecError

IGNORE_FILE = ".deepdockignore"
# Never packaged unless .deepdockignore re-includes them: large, local, or rebuilt in the container.
DEFAULT_IGNORES = (".git/", ".venv/", "venv/", "__pycache__/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/",
                   "node_modules/", "*.pyc")
# Credentials by convention; left out by default and named in a warning when present.
SECRET_IGNORES = (".ssh/", ".aws/", ".gnupg/", ".env", ".env.*", ".netrc", ".pypirc", ".docker/config.json")

_DEFAULTS = pathspec.GitIgnoreSpec.from_lines(DEFAULT_IGNORES)
_SECRETS = pathspec.GitIgnoreSpec.from_lines(SECRET_IGNORES)


@dataclass(frozen=True)
class CodePackage:
    data: bytes
    # Paths (relative, '/'-separated; folders end in '/') left out because they look like secrets.
    skipped_secrets: list[str] = field(default_factory=list)

    def warning(self) -> str | None:
        """The line to show a user when secrets were left out, or None."""
        if not self.skipped_secrets:
            return None
        example = next((p for p in self.skipped_secrets if not p.endswith("/")), self.skipped_secrets[0])
        return (f"left out of the code package (secrets): {', '.join(self.skipped_secrets)} - "
                f"add `!{example}` to {IGNORE_FILE} to include")


class _Ignores:
    def __init__(self, root: Path) -> None:
        ignore_file = root / IGNORE_FILE
        lines = ignore_file.read_text(encoding="utf-8").splitlines() if ignore_file.is_file() else []
        self._user = pathspec.GitIgnoreSpec.from_lines(lines)
        self.skipped_secrets: list[str] = []

    def left_out(self, rel: str) -> bool:
        """Whether ``rel`` (a folder ends in '/') stays out; a secret left out by default is recorded."""
        user = self._user.check_file(rel).include
        if user is not None:  # .deepdockignore has the last word: True = ignore, False = re-included
            return user
        if _SECRETS.match_file(rel):
            self.skipped_secrets.append(rel)
            return True
        return _DEFAULTS.match_file(rel)


def package_code(root: Path) -> CodePackage:
    """A deterministic tar.gz of ``root`` (sorted, fixed mtimes and owners) so unchanged code has the same
    hash. Raises ``SpecError`` naming ``root`` when it is not an existing folder."""
    if not root.exists():
        raise SpecError(f"code folder {root} does not exist")
    if not root.is_dir():
        raise SpecError(f"code folder {root} is not a folder")
    ignores = _Ignores(root)
    buf = io.BytesIO()
    # mtime=0 in the gzip header too, or the same files would hash differently from one second to the next.
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            base = here.relative_to(root).as_posix()
            prefix = "" if base == "." else base + "/"
            dirnames[:] = sorted(d for d in dirnames
                                 if not (here / d).is_symlink() and not ignores.left_out(f"{prefix}{d}/"))
            for name in sorted(filenames):
                rel = prefix + name
                path = here / name
                if path.is_symlink() or ignores.left_out(rel):
                    continue
                info = tar.gettarinfo(str(path), arcname=rel)
                if not info.isfile():
                    continue  # sockets, fifos, devices
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return CodePackage(buf.getvalue(), sorted(ignores.skipped_secrets))
