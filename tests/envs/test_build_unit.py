"""Build logic without an engine: a fake client stands in for docker (cached path, code hashing)."""

from __future__ import annotations

import os
import time

import docker
import pytest

from deepdock.envs import build as build_mod
from deepdock.envs import docker_api
from deepdock.envs.build import build_env, code_tree_hash, env_tag, plan_env
from deepdock.errors import BuildError, PayloadTooLargeError
from deepdock.specs.env import EnvSpec


class FakeImage:
    def __init__(self, ref: str) -> None:
        self.id = "sha256:" + ref.encode().hex()[:64]


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, ref: str) -> FakeImage:
        if ref not in self.present:
            raise docker.errors.ImageNotFound(ref)
        return FakeImage(ref)


class FakeAPI:
    def build(self, **_kw):
        raise AssertionError("the builder must not be called for an existing tag")


class FakeClient:
    def __init__(self, present: set[str]) -> None:
        self.images = FakeImages(present)
        self.api = FakeAPI()


def test_existing_tag_returns_fast_without_building():
    spec = EnvSpec(pip=["six"])
    tag = env_tag(spec)  # locks once (runs pip)
    started = time.monotonic()
    result = build_env(spec, docker_client=FakeClient({tag}))
    assert time.monotonic() - started < 1.0
    assert result.cached and result.tag == tag == result.env_tag


def test_tag_is_content_addressed():
    a = plan_env(EnvSpec(pip=["six"]))
    assert a.tag == plan_env(EnvSpec(name="other-name", pip=["six"])).tag
    assert a.tag != plan_env(EnvSpec(pip=["six"], env={"A": "1"})).tag
    assert a.tag.startswith("deepdock/env:") and len(a.tag.split(":")[1]) == build_mod.TAG_HASH_CHARS


def test_code_hash_ignores_mtime_and_caches(tmp_path):
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    h1 = code_tree_hash(tmp_path)
    os.utime(tmp_path / "main.py", (1, 1))
    (tmp_path / ".git" / "HEAD").write_text("other")
    assert code_tree_hash(tmp_path) == h1
    (tmp_path / "main.py").write_text("print(2)\n")
    assert code_tree_hash(tmp_path) != h1
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "main.py").chmod(0o755)
    assert code_tree_hash(tmp_path) != h1  # the executable bit is part of the code


def test_code_context_holds_only_code(tmp_path):
    import tarfile

    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big").write_bytes(b"0" * 1000)
    buf = build_mod._code_context(tmp_path, "FROM x\n", max_bytes=10_000)
    names = tarfile.open(fileobj=buf).getnames()
    assert names == ["Dockerfile", "code", "code/a.py"]
    with pytest.raises(PayloadTooLargeError):
        build_mod._code_context(tmp_path, "FROM x\n", max_bytes=3)


def test_missing_code_dir_is_a_build_error(tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        code_tree_hash(tmp_path / "nope")


def test_build_error_names_the_step_group():
    class FailingAPI:
        def build(self, **_kw):
            yield {"stream": "Step 1/3 : FROM base\n"}
            yield {"stream": "Step 2/3 : RUN pip install x\n"}
            yield {"stream": "ERROR: No matching distribution\n"}
            yield {"error": "The command returned a non-zero code: 1",
                   "errorDetail": {"message": "The command returned a non-zero code: 1"}}

    client = FakeClient(set())
    client.api = FailingAPI()
    with pytest.raises(BuildError) as exc:
        docker_api.run_build(client, tag="t:1", groups=["base", "deps", "metadata"], path=".")
    assert exc.value.step == "deps"
    assert "step group 'deps'" in exc.value.message and "No matching distribution" in exc.value.output


def _fake_pip_store(monkeypatch, tmp_path):
    from deepdock.envs.lock import LockStore
    from tests.envs.test_lock_fallback import FakePip

    pip = FakePip(host_has_torch=True)
    monkeypatch.setattr(build_mod, "_store", lambda: LockStore(tmp_path / "cache", pip_runner=pip))
    return pip


def test_tag_does_not_depend_on_an_unused_pytorch_index(monkeypatch, tmp_path):
    from deepdock.settings import get_settings

    pip = _fake_pip_store(monkeypatch, tmp_path)
    spec = EnvSpec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu", pip=["numpy"])
    without = plan_env(spec).tag
    monkeypatch.setenv("DEEPDOCK_PYTORCH_INDEX_URL", "https://pytorch.invalid/whl")
    get_settings.cache_clear()
    assert plan_env(spec).tag == without
    assert not any(pip.used_index())


def test_torch_headers_are_stripped_unless_cuda_devel(monkeypatch, tmp_path):
    _fake_pip_store(monkeypatch, tmp_path)
    cpu = plan_env(EnvSpec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu"))
    assert "site-packages/torch/include" in cpu.dockerfile and "torch/share/cmake" in cpu.dockerfile
    assert "site-packages/torch/test" in cpu.dockerfile
    devel = plan_env(EnvSpec(python="3.12", framework={"name": "torch", "version": "2.13.0"}, accelerator="12.8",
                             cuda_devel=True))
    assert "torch/include" not in devel.dockerfile


def test_build_context_holds_no_wheels(monkeypatch, tmp_path):
    import tarfile

    _fake_pip_store(monkeypatch, tmp_path)
    plan = plan_env(EnvSpec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu", pip=["numpy"]))
    with tarfile.open(fileobj=build_mod._env_context(plan)) as tar:
        names = tar.getnames()
        framework_pins = tar.extractfile("framework.lock").read().decode()
    assert sorted(names) == ["Dockerfile", "deps.lock", "framework.lock", "lock.json"]
    assert "torch==2.13.0+cpu --hash=sha256:" in framework_pins
    assert build_mod.wheel_route(plan.lock, "framework") in plan.dockerfile


class _Stop(Exception):
    pass


def test_build_passes_the_debian_mirror_from_settings_or_its_caller(monkeypatch, tmp_path):
    from deepdock.envs import base as base_mod
    from deepdock.settings import get_settings

    _fake_pip_store(monkeypatch, tmp_path)
    seen: list[str] = []

    def fake_ensure_base(client, resolved, *, offline, progress=None, mirror):
        seen.append(mirror)
        raise _Stop

    monkeypatch.setattr(base_mod, "ensure_base", fake_ensure_base)
    spec = EnvSpec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu")
    monkeypatch.setenv("DEEPDOCK_DEBIAN_MIRROR", "http://mirror.invalid/debian")
    get_settings.cache_clear()
    with pytest.raises(_Stop):
        build_env(spec, docker_client=FakeClient(set()), offline=True)
    with pytest.raises(_Stop):
        build_env(spec, docker_client=FakeClient(set()), offline=True, debian_mirror="http://other.invalid/debian")
    assert seen == ["http://mirror.invalid/debian", "http://other.invalid/debian"]


def test_offline_bootstrap_debootstraps_from_the_given_mirror(monkeypatch):
    from deepdock.envs import base as base_mod
    from deepdock.envs.compat import resolve

    seen: list[str] = []

    def fake_rootfs(python, *, progress=None, mirror):
        seen.append(mirror)
        raise _Stop

    monkeypatch.setattr(base_mod, "rootfs_tarball", fake_rootfs)
    resolved = resolve(EnvSpec(), pytorch_index_url="")
    with pytest.raises(_Stop):
        base_mod.ensure_base(FakeClient(set()), resolved, offline=True, mirror="http://mirror.invalid/debian")
    with pytest.raises(_Stop):
        base_mod.ensure_base(FakeClient(set()), resolved, offline=True)
    assert seen == ["http://mirror.invalid/debian", base_mod.DEFAULT_DEBIAN_MIRROR]


def test_settings_defaults_are_the_libraries_defaults(monkeypatch):
    from deepdock.envs import base as base_mod
    from deepdock.envs import wheelserver
    from deepdock.settings import Settings

    for var in ("DEEPDOCK_DEBIAN_MIRROR", "DEEPDOCK_WHEEL_PORT", "DEEPDOCK_PHILLY_DIR"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert (s.debian_mirror, s.wheel_port, s.philly_dir) == \
        (base_mod.DEFAULT_DEBIAN_MIRROR, wheelserver.DEFAULT_PORT, None)
