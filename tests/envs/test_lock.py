from __future__ import annotations

import json

import pytest

from deepdock.envs import lock as lock_mod
from deepdock.envs.compat import resolve
from deepdock.envs.lock import Lock, LockedWheel, LockStore, inputs_hash, parse_wheel_filename, user_requirements
from deepdock.errors import LockError, SpecError
from deepdock.settings import get_settings
from deepdock.specs.env import EnvSpec


def test_parse_wheel_filenames():
    assert parse_wheel_filename("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl") == ("torch", "2.13.0+cpu")
    assert parse_wheel_filename("typing_extensions-4.16.0-py3-none-any.whl") == ("typing-extensions", "4.16.0")
    assert parse_wheel_filename("Foo.Bar-1.0-1build-py3-none-any.whl") == ("foo-bar", "1.0")
    with pytest.raises(LockError):
        parse_wheel_filename("six-1.17.0.tar.gz")


def test_lock_hash_ignores_nothing_and_is_stable():
    w = LockedWheel(name="six", version="1.17.0", filename="six-1.17.0-py2.py3-none-any.whl", sha256="a" * 64, size=1)
    a = Lock(python="3.11", platforms=["p"], requirements=["six"], framework=[], deps=[w])
    b = Lock.model_validate_json(a.model_dump_json())
    assert a.hash == b.hash
    c = Lock(python="3.11", platforms=["p"], requirements=["six"], framework=[],
             deps=[w.model_copy(update={"sha256": "b" * 64})])
    assert a.hash != c.hash
    assert a.pins() == ["six==1.17.0"]


def test_requirements_file_is_read_and_options_rejected(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nsix==1.17.0  # pinned\n\nidna\n")
    spec = EnvSpec(pip=["attrs"], requirements_file=str(req))
    assert user_requirements(spec) == ["attrs", "six==1.17.0", "idna"]
    req.write_text("--index-url http://x\nsix\n")
    with pytest.raises(SpecError, match="option lines"):
        user_requirements(spec)


def test_inputs_hash_depends_on_requirements_not_name():
    a = EnvSpec(name="a", pip=["six"])
    r = resolve(a)
    assert inputs_hash(a, r) == inputs_hash(EnvSpec(name="b", pip=["six"]), r)
    assert inputs_hash(a, r) != inputs_hash(EnvSpec(pip=["six==1.16.0"]), r)


def test_lock_resolves_with_host_pip_and_caches(monkeypatch):
    spec = EnvSpec(pip=["six"])
    store = LockStore(get_settings().cache_dir)
    lock = store.lock(spec, resolve(spec))
    assert [w.name for w in lock.deps] == ["six"] and lock.framework == []
    wheel = store.wheelhouse(lock) / "deps" / lock.deps[0].filename
    assert wheel.is_file() and lock_mod.sha256_file(wheel) == lock.deps[0].sha256

    def no_pip(*_a, **_kw):
        raise AssertionError("pip must not run for a cached lock")

    monkeypatch.setattr(lock_mod, "_pip_download", no_pip)
    assert store.lock(spec, resolve(spec)).hash == lock.hash
    saved = json.loads(store.lock_path(inputs_hash(spec, resolve(spec))).read_text())
    assert saved["deps"][0]["sha256"] == lock.deps[0].sha256


def test_missing_wheelhouse_is_refetched_by_hash():
    spec = EnvSpec(pip=["six"])
    store = LockStore(get_settings().cache_dir)
    lock = store.lock(spec, resolve(spec))
    (store.wheelhouse(lock) / "deps" / lock.deps[0].filename).unlink()
    assert not store.wheelhouse_complete(lock)
    assert store.lock(spec, resolve(spec)).hash == lock.hash
    assert store.wheelhouse_complete(lock)


def test_unknown_package_names_it_and_shows_pip_output():
    spec = EnvSpec(pip=["six==0.0.999"])
    with pytest.raises(LockError) as exc:
        LockStore(get_settings().cache_dir).lock(spec, resolve(spec))
    assert "no wheel of six==0.0.999 for python 3.11" in exc.value.message
    assert "pip output" in exc.value.message and exc.value.step == "lock"
