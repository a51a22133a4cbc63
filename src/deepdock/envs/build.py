"""Environment → image: lock, render, build (or find the image already built), optionally add code.

The tag is content-addressed: ``deepdock/env:<sha256(lock + Dockerfile)[:TAG_HASH_CHARS]>``, so the
same spec gives the same tag on every host, and a build of an existing tag returns at once without
calling the builder.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdock.envs import base as base_mod
from deepdock.envs import docker_api, wheelserver
from deepdock.envs.compat import Resolved, resolve
from deepdock.envs.dockerfile import (
    WHEELS_ARG,
    DockerfilePlan,
    group_lock_name,
    render_code_dockerfile,
    render_env_dockerfile,
    standard_labels,
    step_groups,
)
from deepdock.envs.lock import Lock, LockStore
from deepdock.errors import BuildError, PayloadTooLargeError
from deepdock.settings import get_settings
from deepdock.specs.env import EnvSpec

ENV_REPO = "deepdock/env"
CODE_REPO = "deepdock/code"
TAG_HASH_CHARS = 24  # 96 bits: collisions are not a practical concern
ENV_HASH_LABEL = "deepdock.env.hash"
# Never part of the code layer: VCS data, caches and virtualenvs are large and change without the code.
CODE_EXCLUDE_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache",
                               ".ruff_cache", "node_modules"})
CODE_EXCLUDE_SUFFIXES = (".pyc", ".pyo")
# Installed files a runtime image cannot use, removed in the same RUN as the install (so they never
# reach a layer): C++ headers and cmake configs for building extensions (the runtime image has no
# compiler) and the wheel's C++ unit-test executables (gtest binaries; ``torch.testing`` is kept).
# All kept with ``cuda_devel: true``, whose image has a compiler.
DEVEL_ONLY_PATHS: dict[str, list[str]] = {"torch": ["torch/include", "torch/share/cmake", "torch/test"]}
ROUTE_HASH_CHARS = 16

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EnvPlan:
    """Everything decided before touching the engine."""

    spec: EnvSpec
    resolved: Resolved
    lock: Lock
    dockerfile: str
    env_hash: str

    @property
    def tag(self) -> str:
        return f"{ENV_REPO}:{self.env_hash[:TAG_HASH_CHARS]}"


@dataclass(frozen=True)
class BuildResult:
    tag: str  # the image to run: the code image when code was given, else the env image
    image_id: str
    cached: bool  # True when the tag already existed and the builder was not called
    env_tag: str
    lock_hash: str
    base_image: str
    duration_s: float
    code_hash: str | None = None


def _store() -> LockStore:
    return LockStore(get_settings().cache_dir)


def plan_env(spec: EnvSpec, *, progress: Progress | None = None, store: LockStore | None = None) -> EnvPlan:
    """Resolve + lock + render. Runs pip only when the lock cache misses."""
    resolved = resolve(spec, pytorch_index_url=get_settings().pytorch_index_url)
    lock = (store or _store()).lock(spec, resolved, progress, need_wheels=False)
    plan = DockerfilePlan(
        base_image=resolved.base_image, python=resolved.python, apt=list(spec.apt),
        has_framework_wheels=bool(lock.framework), has_deps_wheels=bool(lock.deps), env=dict(spec.env),
        framework_route=wheel_route(lock, "framework"), deps_route=wheel_route(lock, "deps"),
        strip_paths=[] if spec.cuda_devel else DEVEL_ONLY_PATHS.get(resolved.framework, []),
        labels=standard_labels(lock.hash, resolved.base_image), base_needs_python=resolved.base_needs_python,
    )
    dockerfile = render_env_dockerfile(plan)
    env_hash = hashlib.sha256((lock.canonical_json() + "\n" + dockerfile).encode()).hexdigest()
    return EnvPlan(spec=spec, resolved=resolved, lock=lock, dockerfile=dockerfile, env_hash=env_hash)


def env_tag(spec: EnvSpec) -> str:
    """The content-addressed tag of ``spec``'s image (locks the spec if its lock is not cached)."""
    return plan_env(spec).tag


def wheel_route(lock: Lock, group: str) -> str:
    """The wheel server's URL path for one group: changes exactly when the group's pins change."""
    digest = hashlib.sha256(lock.requirements_text(group).encode()).hexdigest()
    return f"{group}-{digest[:ROUTE_HASH_CHARS]}"


def _env_context(plan: EnvPlan) -> io.BytesIO:
    """The build context: the Dockerfile, the lock and each group's pins. No wheels (a few KB)."""
    files = {"Dockerfile": plan.dockerfile, "lock.json": plan.lock.model_dump_json(indent=2) + "\n"}
    for group in ("framework", "deps"):
        files[group_lock_name(group)] = plan.lock.requirements_text(group)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def build_env(
    spec: EnvSpec,
    *,
    docker_client: Any = None,
    offline: bool = False,
    code_dir: Path | None = None,
    progress: Progress | None = None,
    labels: dict[str, str] | None = None,
    no_cache: bool = False,
    debian_mirror: str | None = None,
    wheel_port: int | None = None,
) -> BuildResult:
    """Build (or reuse) the image of ``spec``; with ``code_dir``, also the code image on top of it.

    ``offline``: never pull; a missing python base is bootstrapped from Debian packages instead.
    ``labels``: extra labels for the built images (tests use them for cleanup).
    ``debian_mirror`` (for that bootstrap) and ``wheel_port`` (the wheel server's): None takes
    ``settings.debian_mirror`` / ``settings.wheel_port``, as this module does for its other settings.
    """
    started = time.monotonic()
    settings = get_settings()
    mirror = settings.debian_mirror if debian_mirror is None else debian_mirror
    port = settings.wheel_port if wheel_port is None else wheel_port
    say = progress or (lambda _msg: None)
    client = docker_client or docker_api.connect()
    store = _store()
    plan = plan_env(spec, progress=say, store=store)
    build_labels = {ENV_HASH_LABEL: plan.env_hash, **(labels or {})}
    cached = not no_cache and docker_api.image_exists(client, plan.tag)
    if cached:
        say(f"env: {plan.tag} exists")
    else:
        base_mod.ensure_base(client, plan.resolved, offline=offline, progress=say, mirror=mirror)
        store.lock(spec, plan.resolved, say, need_wheels=True)
        house = store.wheelhouse(plan.lock)
        routes = {wheel_route(plan.lock, g): house / g for g in ("framework", "deps")}
        with wheelserver.serve_wheels(routes, say, port=port) as wheels_url:
            say(f"env: building {plan.tag} ({plan.resolved.describe()})")
            docker_api.run_build(
                client, tag=plan.tag, groups=step_groups(plan.dockerfile), progress=say,
                fileobj=_env_context(plan), labels=build_labels, nocache=no_cache,
                buildargs={WHEELS_ARG: wheels_url},
                # The host network: pip reaches the wheel server on 127.0.0.1, apt the Debian mirror.
                network_mode="host",
            )
    image_id = client.images.get(plan.tag).id
    if code_dir is None:
        return BuildResult(tag=plan.tag, image_id=image_id, cached=cached, env_tag=plan.tag,
                           lock_hash=plan.lock.hash, base_image=plan.resolved.base_image,
                           duration_s=time.monotonic() - started)
    code = build_code(client, plan.tag, Path(code_dir), progress=say, labels=labels, no_cache=no_cache)
    return BuildResult(tag=code.tag, image_id=code.image_id, cached=cached and code.cached,
                       env_tag=plan.tag, lock_hash=plan.lock.hash, base_image=plan.resolved.base_image,
                       duration_s=time.monotonic() - started, code_hash=code.code_hash)


# ---- code layer ------------------------------------------------------------------------------------


def _code_files(code_dir: Path) -> list[tuple[str, Path]]:
    if not code_dir.is_dir():
        raise BuildError(f"code directory {code_dir} does not exist", step="code")
    out: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(code_dir):
        dirs[:] = sorted(d for d in dirs if d not in CODE_EXCLUDE_DIRS)
        for name in sorted(files):
            if name.endswith(CODE_EXCLUDE_SUFFIXES):
                continue
            path = Path(root) / name
            if path.is_file():
                out.append((path.relative_to(code_dir).as_posix(), path))
    return out


def code_tree_hash(code_dir: Path) -> str:
    """sha256 over (relative path, executable bit, content) of every file: mtimes do not matter."""
    digest = hashlib.sha256()
    for rel, path in _code_files(code_dir):
        executable = bool(path.stat().st_mode & stat.S_IXUSR)
        digest.update(f"{rel}\0{int(executable)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _code_context(code_dir: Path, dockerfile: str, max_bytes: int) -> io.BytesIO:
    """A deterministic tar (fixed mtimes/owners) of the Dockerfile + the code, and nothing else."""
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        dir_info = tarfile.TarInfo("code")
        dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(dir_info)
        for rel, path in _code_files(code_dir):
            total += path.stat().st_size
            if total > max_bytes:
                raise PayloadTooLargeError(
                    f"code in {code_dir} exceeds {max_bytes} bytes (settings.max_code_bytes); "
                    "move data out of the code directory"
                )
            info = tarfile.TarInfo(f"code/{rel}")
            info.size = path.stat().st_size
            info.mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    buf.seek(0)
    return buf


@dataclass(frozen=True)
class CodeResult:
    tag: str
    image_id: str
    cached: bool
    code_hash: str


def build_code(client: Any, env_image: str, code_dir: Path, *, progress: Progress | None = None,
               labels: dict[str, str] | None = None, no_cache: bool = False) -> CodeResult:
    """``FROM env_image`` + ``COPY code /workspace``, tagged by hash(env tag + code tree hash)."""
    say = progress or (lambda _msg: None)
    tree = code_tree_hash(code_dir)
    code_hash = hashlib.sha256(f"{env_image}\n{tree}".encode()).hexdigest()
    tag = f"{CODE_REPO}:{code_hash[:TAG_HASH_CHARS]}"
    if not no_cache and docker_api.image_exists(client, tag):
        say(f"code: {tag} exists")
        return CodeResult(tag=tag, image_id=client.images.get(tag).id, cached=True, code_hash=code_hash)
    dockerfile = render_code_dockerfile(env_image, code_hash)
    context = _code_context(code_dir, dockerfile, get_settings().max_code_bytes)
    say(f"code: building {tag}")
    image_id = docker_api.run_build(client, tag=tag, groups=step_groups(dockerfile), progress=say,
                                fileobj=context, labels=labels, nocache=no_cache)
    return CodeResult(tag=tag, image_id=image_id, cached=False, code_hash=code_hash)
