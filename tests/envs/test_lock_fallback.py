"""The framework's index (PyTorch's) is a fallback: the host's pip configuration is tried first."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepdock.envs.compat import resolve
from deepdock.envs.lock import LockStore, inputs_hash, should_try_fallback
from deepdock.errors import LockError
from deepdock.specs.env import EnvSpec

INDEX = "https://pytorch.invalid/whl"
TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
NUMPY_WHEEL = "numpy-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl"
FILELOCK_WHEEL = "filelock-3.20.0-py3-none-any.whl"


class FakePip:
    """``pip download`` as a function: the host has ``host_wheels``; the index adds torch."""

    def __init__(self, host_has_torch: bool, fail_other: str = "") -> None:
        self.host_has_torch = host_has_torch
        self.fail_other = fail_other
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> tuple[int, str]:
        self.calls.append(cmd)
        if self.fail_other:
            return 1, self.fail_other
        dest = Path(cmd[cmd.index("--dest") + 1])
        with_index = any(a.startswith(INDEX) for a in cmd)
        wanted = list(cmd)
        if "-r" in cmd:  # a re-fetch by hash: the pins are in a requirements file
            wanted += Path(cmd[cmd.index("-r") + 1]).read_text().split()
        if any(a.startswith("torch==") for a in wanted) and not (self.host_has_torch or with_index):
            (dest / FILELOCK_WHEEL).write_bytes(b"partial")  # pip may have fetched some deps first
            return 1, ("ERROR: Could not find a version that satisfies the requirement torch==2.13.0+cpu\n"
                       "ERROR: No matching distribution found for torch==2.13.0+cpu\n")
        names = [FILELOCK_WHEEL]
        if any(a.startswith("torch==") for a in wanted):
            names.append(TORCH_WHEEL)
        if any(a.startswith("numpy") for a in wanted):
            names.append(NUMPY_WHEEL)
        for name in names:
            (dest / name).write_bytes(name.encode())
        return 0, "Saved\n"

    def used_index(self) -> list[bool]:
        return [any(a.startswith(INDEX) for a in c) for c in self.calls]


SPEC = EnvSpec(python="3.11", framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu", pip=["numpy"])


def _lock(tmp_path: Path, name: str, pip: FakePip, index: str):
    messages: list[str] = []
    store = LockStore(tmp_path / name, pip_runner=pip)
    lock = store.lock(SPEC, resolve(SPEC, pytorch_index_url=index), messages.append)
    return store, lock, messages


def test_host_config_alone_when_it_has_the_framework(tmp_path):
    pip = FakePip(host_has_torch=True)
    store, lock, messages = _lock(tmp_path, "a", pip, INDEX)
    assert pip.used_index() == [False, False]  # framework-only, then everything: never the index
    assert [w.name for w in lock.framework] == ["filelock", "torch"] and [w.name for w in lock.deps] == ["numpy"]
    assert not any("retrying" in m for m in messages)
    assert store.wheelhouse_complete(lock)


def test_index_setting_does_not_change_the_lock_when_unused(tmp_path):
    _, with_index, _ = _lock(tmp_path, "a", FakePip(host_has_torch=True), INDEX)
    _, without_index, _ = _lock(tmp_path, "b", FakePip(host_has_torch=True), "")
    assert with_index.hash == without_index.hash
    assert inputs_hash(SPEC, resolve(SPEC, pytorch_index_url=INDEX)) == inputs_hash(SPEC, resolve(SPEC))


def test_falls_back_to_the_framework_index_and_says_so(tmp_path):
    pip = FakePip(host_has_torch=False)
    store, lock, messages = _lock(tmp_path, "a", pip, INDEX)
    assert pip.used_index() == [False, True, True]  # host alone, retry with the index, then everything
    assert [w.name for w in lock.framework] == ["filelock", "torch"]
    assert any(f"torch==2.13.0+cpu not found with the host's pip configuration; retrying with {INDEX}/cpu" in m
               for m in messages)
    assert store.wheelhouse_complete(lock)


def test_no_index_configured_fails_naming_the_framework(tmp_path):
    pip = FakePip(host_has_torch=False)
    with pytest.raises(LockError, match=r"no wheel of torch==2.13.0\+cpu"):
        _lock(tmp_path, "a", pip, "")
    assert pip.used_index() == [False]


def test_other_failures_do_not_try_the_index(tmp_path):
    pip = FakePip(host_has_torch=True, fail_other="ERROR: THESE PACKAGES DO NOT MATCH THE HASHES\n")
    with pytest.raises(LockError, match="pip download failed"):
        _lock(tmp_path, "a", pip, INDEX)
    assert pip.used_index() == [False]


def test_fallback_decision():
    not_found = LockError("x", output="ERROR: No matching distribution found for torch==2.13.0+cpu")
    assert should_try_fallback(not_found, [INDEX + "/cpu"])
    assert not should_try_fallback(not_found, [])
    assert not should_try_fallback(LockError("x", output="Read timed out."), [INDEX + "/cpu"])


def test_refetch_by_hash_falls_back_too(tmp_path):
    pip = FakePip(host_has_torch=False)
    store, lock, _ = _lock(tmp_path, "a", pip, INDEX)
    (store.wheelhouse(lock) / "framework" / TORCH_WHEEL).unlink()
    pip.calls.clear()
    messages: list[str] = []
    assert store.lock(SPEC, resolve(SPEC, pytorch_index_url=INDEX), messages.append).hash == lock.hash
    assert pip.used_index() == [False, True]
    assert store.wheelhouse_complete(lock)
