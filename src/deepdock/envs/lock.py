"""Lock: resolve an environment's requirements on the host for the image's platform, pin every file.

Resolution runs ``pip download`` with the host's own pip configuration (indexes, find-links, certs,
constraints) and ``--platform/--python-version/--abi`` for the image, so the host's python version does
not matter. The result is a :class:`Lock` (name==version + sha256 of each wheel, split into the
framework group and the deps group) and a wheelhouse directory holding exactly those wheels. The image
then installs with ``--no-index`` from the wheelhouse: builds are reproducible and work air-gapped.

Indexes: the host's pip configuration comes first. The framework's own index (PyTorch's, from
``settings.pytorch_index_url``) is a fallback only: it is added, and said so in the progress output,
only when the host's configuration cannot provide the framework's requirements. An unreachable
index is never contacted when it is not needed, and whether the index was configured does not change
the lock (the lock records wheels, not where they came from).

Caches (under ``settings.cache_dir``):
  locks/<inputs-hash>.json   the lock for one set of inputs: an unchanged spec never re-runs pip
  wheelhouse/<lock-hash>/    the wheels of one lock: {framework,deps}/*.whl
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from deepdock.envs.compat import Resolved
from deepdock.errors import LockError
from deepdock.specs.env import EnvSpec, read_requirements

PIP_TIMEOUT_S = 1800  # a cold torch+CUDA resolution downloads several GB
PIP_OUTPUT_TAIL_CHARS = 3000
LOCK_FORMAT = 1  # bump when the lock layout or the resolution flags change: old cache entries then miss
GROUPS = ("framework", "deps")
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_NO_MATCH_RE = re.compile(r"No matching distribution found for (\S+)")
_NO_VERSION_RE = re.compile(r"Could not find a version that satisfies the requirement (\S+)")

Progress = Callable[[str], None]
# One pip invocation: argv in, (exit status, combined output) out. Tests pass a fake.
PipRunner = Callable[[list[str]], tuple[int, str]]


class LockedWheel(BaseModel):
    name: str
    version: str
    filename: str
    sha256: str
    size: int


class Lock(BaseModel):
    format: int = LOCK_FORMAT
    python: str
    platforms: list[str]
    requirements: list[str]  # the top-level inputs, for people reading the lock
    framework: list[LockedWheel]
    deps: list[LockedWheel]

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def wheels(self) -> list[tuple[str, LockedWheel]]:
        return [("framework", w) for w in self.framework] + [("deps", w) for w in self.deps]

    def pins(self) -> list[str]:
        return [f"{w.name}=={w.version}" for _, w in self.wheels()]

    def requirements_text(self, group: str | None = None) -> str:
        """pip's hash-checking requirements (``name==version --hash=sha256:...``) of one group, or all."""
        wheels = [w for g, w in self.wheels() if group is None or g == group]
        return "".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in wheels)


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_filename(filename: str) -> tuple[str, str]:
    match = _WHEEL_RE.match(filename)
    if not match:
        raise LockError(f"pip produced a file that is not a wheel: {filename}", step="lock")
    return normalize_name(match.group("name")), match.group("version")


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def user_requirements(spec: EnvSpec) -> list[str]:
    """The spec's pip list plus its requirements file's lines (comments and blanks dropped)."""
    reqs = list(spec.pip)
    if spec.requirements_file:
        reqs += read_requirements(spec.requirements_file)
    return reqs


def inputs_hash(spec: EnvSpec, resolved: Resolved) -> str:
    """Everything that can change the resolution. The host's pip config is not in it: clear the cache
    (``settings.cache_dir/locks``) after changing it, or pass a new index in the spec. The framework's
    fallback index is not in it either: it only supplies wheels the host lacks, pinned by hash."""
    payload = {
        "format": LOCK_FORMAT,
        "python": resolved.python,
        "platforms": resolved.platforms,
        "framework": resolved.framework_requirements,
        "requirements": user_requirements(spec),
        "indexes": list(spec.extra_index_urls),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_pip(cmd: list[str]) -> tuple[int, str]:
    """The real pip runner: a subprocess with a time limit."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise LockError(f"pip download did not finish in {PIP_TIMEOUT_S} s", step="lock",
                        output=str(exc.stdout or "")[-PIP_OUTPUT_TAIL_CHARS:]) from None
    return proc.returncode, proc.stdout + proc.stderr


def _pip_download(
    reqs: list[str], dest: Path, resolved: Resolved, indexes: list[str], *, no_deps: bool = False,
    require_hashes_file: Path | None = None, runner: PipRunner = run_pip,
) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
           "--only-binary=:all:", "--dest", str(dest), "--python-version", resolved.python,
           "--implementation", "cp", "--abi", "cp" + resolved.python.replace(".", "")]
    for plat in resolved.platforms:
        cmd += ["--platform", plat]
    for url in indexes:
        cmd += ["--extra-index-url", url]
    if no_deps:
        cmd.append("--no-deps")
    if require_hashes_file is not None:
        cmd += ["--require-hashes", "-r", str(require_hashes_file)]
    cmd += reqs
    returncode, output = runner(cmd)
    if returncode != 0:
        output = output[-PIP_OUTPUT_TAIL_CHARS:]
        missing = _NO_MATCH_RE.findall(output) or _NO_VERSION_RE.findall(output)
        what = f"no wheel of {missing[-1]} for python {resolved.python} linux x86_64" if missing else (
            "pip download failed")
        raise LockError(f"lock failed: {what}\n--- pip output (tail) ---\n{output}", step="lock",
                        output=output)


def missing_requirements(output: str) -> list[str]:
    """The requirements pip said it could not find, from its output."""
    return _NO_MATCH_RE.findall(output) or _NO_VERSION_RE.findall(output)


def should_try_fallback(error: LockError, fallback_indexes: list[str]) -> bool:
    """Retry with the framework's index only when there is one and pip failed because something was
    not found (not on a hash mismatch, a bad requirement or a timeout)."""
    return bool(fallback_indexes) and bool(missing_requirements(error.output or ""))


def download_with_fallback(
    reqs: list[str], dest: Path, resolved: Resolved, indexes: list[str], fallback_indexes: list[str],
    say: Progress, *, runner: PipRunner = run_pip, no_deps: bool = False,
    require_hashes_file: Path | None = None,
) -> list[str]:
    """``pip download`` with the host's configuration (+ ``indexes``); if that cannot find a
    requirement and ``fallback_indexes`` is not empty, again with them added. Returns the indexes that
    worked."""
    try:
        _pip_download(reqs, dest, resolved, indexes, no_deps=no_deps, require_hashes_file=require_hashes_file,
                      runner=runner)
        return indexes
    except LockError as exc:
        if not should_try_fallback(exc, fallback_indexes):
            raise
        missing = missing_requirements(exc.output or "")[-1]
        say(f"lock: {missing} not found with the host's pip configuration; "
            f"retrying with {' '.join(fallback_indexes)}")
    for leftover in dest.iterdir():  # partial downloads of the first try
        if leftover.is_file():
            leftover.unlink()
    with_fallback = indexes + fallback_indexes
    _pip_download(reqs, dest, resolved, with_fallback, no_deps=no_deps, require_hashes_file=require_hashes_file,
                  runner=runner)
    return with_fallback


def _wheels_in(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir() if p.name.endswith(".whl")}


def _entries(paths: list[Path]) -> list[LockedWheel]:
    out = []
    for path in sorted(paths, key=lambda p: p.name):
        name, version = parse_wheel_filename(path.name)
        out.append(LockedWheel(name=name, version=version, filename=path.name, sha256=sha256_file(path),
                               size=path.stat().st_size))
    return out


class LockStore:
    """The lock + wheelhouse cache under one directory (``settings.cache_dir`` by default)."""

    def __init__(self, cache_dir: Path, *, pip_runner: PipRunner = run_pip) -> None:
        self.root = cache_dir
        self.pip_runner = pip_runner
        self.locks_dir = cache_dir / "locks"
        self.wheelhouse_root = cache_dir / "wheelhouse"

    def lock_path(self, key: str) -> Path:
        return self.locks_dir / f"{key}.json"

    def wheelhouse(self, lock: Lock) -> Path:
        return self.wheelhouse_root / lock.hash[:32]

    def cached_lock(self, key: str) -> Lock | None:
        path = self.lock_path(key)
        if not path.exists():
            return None
        try:
            return Lock.model_validate_json(path.read_text())
        except ValueError:
            return None  # a corrupt or old-format entry is a miss, not an error

    def wheelhouse_complete(self, lock: Lock) -> bool:
        house = self.wheelhouse(lock)
        return all(
            (house / group / w.filename).is_file() and (house / group / w.filename).stat().st_size == w.size
            for group, w in lock.wheels()
        )

    def _save_lock(self, key: str, lock: Lock) -> None:
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.lock_path(key).with_suffix(".tmp")
        tmp.write_text(lock.model_dump_json(indent=2))
        os.replace(tmp, self.lock_path(key))  # atomic: a concurrent reader sees old or new, never half

    def _install_wheelhouse(self, lock: Lock, files: dict[str, Path]) -> None:
        house = self.wheelhouse(lock)
        staging = Path(tempfile.mkdtemp(dir=self.wheelhouse_root, prefix=".staging-"))
        try:
            for group, wheel in lock.wheels():
                (staging / group).mkdir(exist_ok=True)
                shutil.move(str(files[wheel.filename]), staging / group / wheel.filename)
            for group in GROUPS:
                (staging / group).mkdir(exist_ok=True)
            if house.exists():
                shutil.rmtree(house)
            os.replace(staging, house)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def lock(self, spec: EnvSpec, resolved: Resolved, progress: Progress | None = None, *,
             need_wheels: bool = True) -> Lock:
        """Return the lock for ``spec``, running pip only on a cache miss. With ``need_wheels`` the
        wheelhouse is complete on return (computing a tag needs only the lock, not the wheels)."""
        say = progress or (lambda _msg: None)
        key = inputs_hash(spec, resolved)
        cached = self.cached_lock(key)
        if cached is not None and not need_wheels:
            say(f"lock: cached ({len(cached.wheels())} wheels)")
            return cached
        if cached is not None and self.wheelhouse_complete(cached):
            return cached
        self.wheelhouse_root.mkdir(parents=True, exist_ok=True)
        indexes = list(spec.extra_index_urls)
        fallback = [u for u in resolved.index_urls if u not in indexes]
        with tempfile.TemporaryDirectory(dir=self.wheelhouse_root, prefix=".pip-") as tmp:
            tmp_dir = Path(tmp)
            if cached is not None:
                say("lock: cached, re-fetching its wheels by hash")
                self._refetch(cached, tmp_dir, resolved, indexes, fallback, say)
                return cached
            lock = self._resolve(spec, resolved, indexes, fallback, tmp_dir, say)
        self._save_lock(key, lock)
        return lock

    def _resolve(self, spec: EnvSpec, resolved: Resolved, indexes: list[str], fallback: list[str],
                 tmp: Path, say: Progress) -> Lock:
        user = user_requirements(spec)
        all_reqs = resolved.framework_requirements + user
        framework_names: set[str] = set()
        if resolved.framework_requirements:
            # The framework's own closure, resolved alone: whatever of it survives the full resolution
            # is the framework layer; the rest is the deps layer.
            say(f"lock: resolving {' '.join(resolved.framework_requirements)}")
            fw_dir = tmp / "framework-only"
            fw_dir.mkdir()
            # The host's configuration first; the framework's index only if the host lacks a wheel.
            indexes = download_with_fallback(resolved.framework_requirements, fw_dir, resolved, indexes,
                                             fallback, say, runner=self.pip_runner)
            framework_names = set(_wheels_in(fw_dir))
            shutil.rmtree(fw_dir)
        all_dir = tmp / "all"
        all_dir.mkdir()
        if all_reqs:
            say(f"lock: resolving {len(all_reqs)} requirement(s)")
            # The indexes that resolved the framework (never the fallback when the host sufficed).
            _pip_download(all_reqs, all_dir, resolved, indexes, runner=self.pip_runner)
        files = _wheels_in(all_dir)
        fw_paths = [p for n, p in files.items() if n in framework_names]
        dep_paths = [p for n, p in files.items() if n not in framework_names]
        lock = Lock(python=resolved.python, platforms=resolved.platforms, requirements=all_reqs,
                    framework=_entries(fw_paths), deps=_entries(dep_paths))
        self._install_wheelhouse(lock, files)
        say(f"lock: {len(lock.framework)} framework + {len(lock.deps)} deps wheels, lock {lock.hash[:12]}")
        return lock

    def _refetch(self, lock: Lock, tmp: Path, resolved: Resolved, indexes: list[str], fallback: list[str],
                 say: Progress) -> None:
        reqs_file = tmp / "requirements.txt"
        reqs_file.write_text(lock.requirements_text())
        dest = tmp / "all"
        dest.mkdir()
        if lock.wheels():
            download_with_fallback([], dest, resolved, indexes, fallback, say, runner=self.pip_runner,
                                   no_deps=True, require_hashes_file=reqs_file)
        self._install_wheelhouse(lock, _wheels_in(dest))
