"""Environments against a real Docker engine: offline base, small env, code layer, failures, torch.

The python base is bootstrapped from Debian packages once (or reused when present); everything else
is built with this session's labels and removed at the end.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from tests.conftest import IN_CI, TEST_LABEL

from deepdock.envs.base import OFFLINE_LABEL, bootstrap_base, offline_image_name
from deepdock.envs.build import build_env, plan_env
from deepdock.envs.dockerfile import USER_UID
from deepdock.envs.inspect import layer_groups
from deepdock.errors import BuildError
from deepdock.settings import get_settings
from deepdock.specs.env import EnvSpec

pytestmark = pytest.mark.docker

CODE_REBUILD_BUDGET_S = 2.0
CACHED_BUILD_BUDGET_S = 1.0


@pytest.fixture(scope="session")
def session_labels(docker_client):
    labels = {TEST_LABEL: f"envs-{uuid.uuid4().hex[:12]}"}
    yield labels
    for img in docker_client.images.list(filters={"label": f"{TEST_LABEL}={labels[TEST_LABEL]}"}):
        try:
            docker_client.images.remove(img.id, force=True)
        except Exception:  # noqa: BLE001 - removed already with a child
            pass


@pytest.fixture(scope="session")
def offline_base(docker_client, env_home) -> str:
    """The python 3.11 base built from Debian packages; reused across sessions (it is shared state,
    like a pulled base image, so it carries no test label)."""
    name = offline_image_name("3.11")
    try:
        docker_client.images.get(name)
    except Exception:  # noqa: BLE001 - missing: build it
        bootstrap_base(docker_client, "3.11", mirror=get_settings().debian_mirror)
    return name


@pytest.fixture(scope="session")
def small_env(docker_client, offline_base, session_labels):
    spec = EnvSpec(pip=["six"], env={"GREETING": "hello $USER"})
    return spec, build_env(spec, docker_client=docker_client, offline=True, labels=session_labels)


@pytest.fixture(scope="session")
def torch_env(docker_client, offline_base, session_labels):
    spec = EnvSpec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu", pip=["numpy"])
    return spec, build_env(spec, docker_client=docker_client, offline=True, labels=session_labels)


def run(docker_client, image: str, *cmd: str) -> str:
    return docker_client.containers.run(image, list(cmd), remove=True).decode()


def test_offline_base_is_labelled_and_has_python(docker_client, offline_base):
    image = docker_client.images.get(offline_base)
    if image.labels.get(OFFLINE_LABEL) != "offline":
        if IN_CI:  # CI bootstraps its base: an upstream image there means the offline path did not run
            pytest.fail(f"{offline_base} is not the bootstrapped base under CI=true")
        pytest.skip(f"{offline_base} is an upstream image here, not a bootstrapped one")
    assert run(docker_client, offline_base, "python3", "-c", "import sys, venv, ssl; print(sys.version_info[:2])"
               ).strip() == "(3, 11)"


def test_small_env_labels_user_and_no_wheels(docker_client, small_env):
    spec, result = small_env
    image = docker_client.images.get(result.tag)
    labels = image.labels
    assert labels["deepdock.managed"] == "true"
    assert result.tag.endswith(labels["deepdock.env.hash"][:24])
    assert labels["deepdock.env.lock"] == result.lock_hash and labels["deepdock.version"]
    assert image.attrs["Config"]["User"] == f"{USER_UID}:{USER_UID}"
    out = run(docker_client, result.tag, "sh", "-c",
              "id -u; python -c 'import six; print(six.__version__)'; echo \"$GREETING\"; "
              "ls /wheels 2>&1; find /opt -name '*.whl' | wc -l; command -v gcc cc || echo no-compiler")
    uid, six_version, greeting, wheels_dir, wheel_count, compiler = out.strip().splitlines()
    assert uid == str(USER_UID) and six_version == "1.17.0" and greeting == "hello $USER"
    assert "No such file" in wheels_dir and wheel_count == "0" and compiler == "no-compiler"
    groups = {g.name: g.size_bytes for g in layer_groups(docker_client, result.tag)}
    assert list(groups)[:4] == ["base", "system", "framework", "deps"]
    assert groups["deps"] < 1_000_000  # six's install, not a wheelhouse


def test_existing_tag_returns_without_building(docker_client, small_env):
    spec, first = small_env
    started = time.monotonic()
    again = build_env(spec, docker_client=docker_client, offline=True)
    assert time.monotonic() - started < CACHED_BUILD_BUDGET_S
    assert again.cached and again.tag == first.tag and again.image_id == first.image_id


def test_code_only_change_rebuilds_only_the_code_layer(docker_client, small_env, session_labels, tmp_path):
    spec, env = small_env
    (tmp_path / "train.py").write_text("print('v1')\n")
    v1 = build_env(spec, docker_client=docker_client, code_dir=tmp_path, labels=session_labels)
    (tmp_path / "train.py").write_text("print('v2')\n")
    started = time.monotonic()
    v2 = build_env(spec, docker_client=docker_client, code_dir=tmp_path, labels=session_labels)
    elapsed = time.monotonic() - started
    assert elapsed < CODE_REBUILD_BUDGET_S, f"code-only rebuild took {elapsed:.2f}s"
    assert v1.tag != v2.tag and v1.env_tag == v2.env_tag == env.tag
    assert run(docker_client, v2.tag, "python", "train.py").strip() == "v2"
    env_layers = docker_client.images.get(env.tag).attrs["RootFS"]["Layers"]
    code_layers = docker_client.images.get(v2.tag).attrs["RootFS"]["Layers"]
    assert code_layers[: len(env_layers)] == env_layers and len(code_layers) == len(env_layers) + 1


def _broken_wheel_index(root: Path) -> str:
    """A local index with a wheel whose metadata is fine (so the lock succeeds) but whose module's
    bytes are corrupt (so pip install in the image fails: a failing pip step)."""
    name, version = "ddbroken", "0.1"
    files = {
        f"{name}.py": b"VALUE = 1\n" * 20,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for p, d in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
    files[f"{name}-{version}.dist-info/RECORD"] = record.encode()
    wheel = root / "files" / f"{name}-{version}-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    raw = bytearray(wheel.read_bytes())
    at = raw.index(b"VALUE = 1\n")
    raw[at:at + 5] = b"XXXXX"  # breaks the CRC of the module only
    wheel.write_bytes(bytes(raw))
    index = root / "simple" / name
    index.mkdir(parents=True)
    (index / "index.html").write_text(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n')
    return f"file://{root / 'simple'}"


def test_failing_pip_step_names_it_and_leaves_no_tag(docker_client, offline_base, labelled_cleanup, tmp_path):
    spec = EnvSpec(pip=["ddbroken==0.1"], extra_index_urls=[_broken_wheel_index(tmp_path)])
    tag = plan_env(spec).tag
    with pytest.raises(BuildError) as exc:
        build_env(spec, docker_client=docker_client, offline=True, labels=labelled_cleanup)
    assert exc.value.step == "deps" and "pip install" in exc.value.message
    assert not docker_client.images.list(name=tag)
    leftovers = docker_client.containers.list(all=True, filters={"ancestor": offline_base, "status": "exited"})
    assert not [c for c in leftovers if "pip install" in " ".join(c.attrs["Config"].get("Cmd") or [])]


@pytest.mark.slow
def test_torch_cpu_env_imports_torch(docker_client, torch_env):
    _, result = torch_env
    out = run(docker_client, result.tag, "python", "-c",
              "import torch, numpy; print(torch.__version__, int(torch.ones(3).sum()))")
    assert out.split() == ["2.13.0+cpu", "3"]
    groups = {g.name: g.size_bytes for g in layer_groups(docker_client, result.tag)}
    assert groups["framework"] > 500_000_000 > groups["deps"]  # torch in its own layer
    assert run(docker_client, result.tag, "sh", "-c", "find / -xdev -name 'torch-*.whl' | wc -l").strip() == "0"
    # C++ headers, cmake files and C++ test binaries are not in the runtime image (no cuda_devel).
    site = "/opt/venv/lib/python3.11/site-packages/torch"
    assert run(docker_client, result.tag, "sh", "-c",
               f"ls -d {site}/include {site}/share/cmake {site}/test 2>/dev/null | wc -l").strip() == "0"
