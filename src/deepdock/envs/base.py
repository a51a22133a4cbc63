"""Offline base images: build the python base an environment expects from Debian packages.

Docker Hub may be unreachable (air-gapped sites, this project's CI). ``bootstrap_base`` makes an
equivalent of ``python:<py>-slim-<suite>`` with debootstrap (minbase + Debian's python3), strips what a
runtime never needs, imports it with ``docker import`` and tags it under the upstream name, so the same
Dockerfile (and so the same content-addressed env tag) builds with either base.

Differences from the upstream image (documented in docs/environments.md): python is Debian's
(/usr/bin/python3, Debian patches, e.g. dist-packages) instead of a source build under /usr/local; only
the python whose version equals the suite's python3 is possible (3.11 → bookworm, 3.13 → trixie).
Env images put a venv first on PATH, so ``python``/``pip`` behave the same on both bases.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepdock.envs import docker_api
from deepdock.envs.compat import OFFLINE_SUITES, Resolved
from deepdock.errors import BuildError, SpecError
from deepdock.settings import get_settings

# The caller passes the mirror (settings.debian_mirror, env DEEPDOCK_DEBIAN_MIRROR); this is its default.
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP = "debootstrap"
DEBOOTSTRAP_TIMEOUT_S = 1200
IMPORT_TIMEOUT_S = 600
OUTPUT_TAIL_CHARS = 3000
BASE_FORMAT = 1  # bump when the package set or the stripping changes: cached tarballs then miss
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Removed from the root filesystem: package lists, docs, man pages, translations: ~40% of minbase.
STRIP_PATHS = ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info",
               "usr/share/locale", "usr/share/lintian", "var/log")
OFFLINE_LABEL = "deepdock.base"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]


def offline_image_name(python: str) -> str:
    suite = suite_for(python)
    return f"python:{python}-slim-{suite}"


def suite_for(python: str) -> str:
    if python not in OFFLINE_SUITES:
        choices = ", ".join(f"{py} ({suite})" for py, suite in OFFLINE_SUITES.items())
        raise SpecError(f"no offline base for python {python}: Debian ships python {choices}")
    return OFFLINE_SUITES[python]


def _run(cmd: list[str], what: str, timeout_s: int) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} is not installed (apt-get install {cmd[0]})", step="base") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: did not finish in {timeout_s} s", step="base") from None
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-OUTPUT_TAIL_CHARS:]
        raise BuildError(f"{what} failed (exit {proc.returncode})\n--- output (tail) ---\n{tail}",
                         step="base", output=tail)


def _strip(root: Path) -> None:
    for rel in STRIP_PATHS:
        target = root / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    # apt-get update recreates lists; keep the partial/ dir it expects.
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def rootfs_tarball(python: str, *, progress: Progress | None = None, mirror: str = DEFAULT_DEBIAN_MIRROR) -> Path:
    """The stripped root filesystem as a tar, cached under ``cache_dir/bases`` (debootstrap once)."""
    say = progress or (lambda _msg: None)
    suite = suite_for(python)
    cache = get_settings().cache_dir / "bases"
    tarball = cache / f"{suite}-py{python}-v{BASE_FORMAT}.tar"
    if tarball.exists():
        say(f"base: cached root filesystem {tarball}")
        return tarball
    if os.geteuid() != 0:
        raise BuildError("base bootstrap runs debootstrap, which needs root", step="base")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=".rootfs-"))
    try:
        root = work / "root"
        say(f"base: debootstrap {suite} (minbase + {', '.join(BASE_PACKAGES)}) from {mirror}")
        _run([DEBOOTSTRAP, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(root),
              mirror], f"debootstrap {suite}", DEBOOTSTRAP_TIMEOUT_S)
        _strip(root)
        partial = work / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], "tar rootfs",
             DEBOOTSTRAP_TIMEOUT_S)
        os.replace(partial, tarball)  # atomic: an interrupted bootstrap leaves no half tarball
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def bootstrap_base(client: Any, python: str, *, progress: Progress | None = None,
                   labels: dict[str, str] | None = None, name: str | None = None,
                   mirror: str = DEFAULT_DEBIAN_MIRROR) -> str:
    """Build and tag the offline base for ``python`` (debootstrap from ``mirror``); return its name
    (``python:3.11-slim-bookworm``)."""
    say = progress or (lambda _msg: None)
    image = name or offline_image_name(python)
    suite = suite_for(python)
    tarball = rootfs_tarball(python, progress=say, mirror=mirror)
    repo, tag = image.rsplit(":", 1)
    all_labels = {OFFLINE_LABEL: "offline", f"{OFFLINE_LABEL}.suite": suite, **(labels or {})}
    changes = [f"ENV PATH={PATH_ENV}", "ENV LANG=C.UTF-8", 'CMD ["python3"]']
    changes += [f'LABEL {k}="{v}"' for k, v in sorted(all_labels.items())]
    say(f"base: docker import as {image}")
    try:
        client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=changes)
    except Exception as exc:  # noqa: BLE001 - docker-py raises several unrelated types here
        raise BuildError(f"docker import of {tarball} failed: {exc}", step="base") from None
    return image


def ensure_base(client: Any, resolved: Resolved, *, offline: bool, progress: Progress | None = None,
                mirror: str = DEFAULT_DEBIAN_MIRROR) -> None:
    """Make ``resolved.base_image`` present: reuse, else pull (unless offline), else bootstrap (from
    the Debian ``mirror``)."""
    say = progress or (lambda _msg: None)
    base = resolved.base_image
    if docker_api.image_exists(client, base):
        return
    bootstrappable = resolved.python in OFFLINE_SUITES and base == offline_image_name(resolved.python)
    pull_error = "offline: not pulled"
    if not offline:
        say(f"base: pulling {base}")
        try:
            client.images.pull(base)
            return
        except Exception as exc:  # noqa: BLE001 - any pull failure falls through to the offline path
            pull_error = str(exc).splitlines()[0]
    if not bootstrappable:
        hint = ("CUDA devel images cannot be made from Debian packages; `docker load` it on this host"
                if base.startswith("nvidia/") else
                f"`docker load` it, or use python {' or '.join(OFFLINE_SUITES)} with the default base")
        raise BuildError(f"base image {base} is missing and cannot be pulled ({pull_error}); {hint}",
                         step="base")
    say(f"base: {base} missing ({pull_error}); bootstrapping it from Debian packages")
    bootstrap_base(client, resolved.python, progress=say, mirror=mirror)
