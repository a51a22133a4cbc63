"""``python -m deepdock.sdk.export`` for real, inside the demo's own torch image, the way the server runs it.

The image is built from ``src/deepdock/demo/env.yaml`` (so the demo's environment is what is tested: torch
2.13 CPU, onnx, onnxruntime, onnxscript). The container gets only what the server gives every job: the
``deepdock/sdk`` folder and the package's ``__init__`` (``sdk_files``) on ``PYTHONPATH``, no network. A
script run in that container trains the digits MLP for a moment and saves it with ``torch.save``, next to
a model that scripting rejects (traced instead), one whose data-dependent branch a trace gets wrong (a
parity failure, exit status 1), a state_dict (refused, exit status 2) and a TorchScript archive.
"""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest
from tests.conftest import TEST_LABEL
from tests.integration.conftest import remove_labelled

from deepdock.envs.base import bootstrap_base, offline_image_name
from deepdock.envs.build import build_env
from deepdock.envs.dockerfile import USER_UID, WORKDIR
from deepdock.server.services.jobfiles import python_path, sdk_files
from deepdock.settings import get_settings
from deepdock.specs.env import load_env_spec

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEMO_ENV = Path(__file__).resolve().parents[2] / "src" / "deepdock" / "demo" / "env.yaml"
EXPORT_TIMEOUT_S = 300

TESTMODELS = '''
import torch
from torch import nn


def digits_mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))


class VarArgs(nn.Module):
    """torch.jit.script cannot compile ``*inputs``: the export traces it."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(64, 10)

    def forward(self, *inputs):
        return torch.relu(self.l(inputs[0]))


class Branchy(VarArgs):
    """Not scriptable either, and which branch runs depends on the data: a trace keeps the example's."""

    def forward(self, *inputs):
        x = inputs[0]
        if x.sum() > 0:
            return self.l(x)
        return -self.l(x)
'''

MAKE_MODELS = '''
import os

import numpy as np
import torch
from sklearn.datasets import load_digits

import testmodels

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
model = testmodels.digits_mlp()
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
for epoch in range(3):
    for i in range(0, len(x), 64):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
        optimizer.step()
model.eval()
example = x[:8]


def save(name, obj, save=torch.save):
    os.makedirs(name)
    save(obj, f"{name}/model.pt")
    np.save(f"{name}/example_input.npy", example.numpy())


save("digits", model)
save("varargs", testmodels.VarArgs().eval())
save("branchy", testmodels.Branchy().eval())
save("state", model.state_dict())
save("scripted", torch.jit.script(model), torch.jit.save)
print("accuracy", float((model(x).argmax(1) == y).float().mean()))
'''


@pytest.fixture(scope="session")
def export_labels(docker_client):
    labels = {TEST_LABEL: f"export-{uuid.uuid4().hex[:12]}"}
    yield labels
    remove_labelled(docker_client, labels)


@pytest.fixture(scope="session")
def demo_image(docker_client, env_home, export_labels) -> str:
    """The demo's environment built offline (the python base bootstrapped from Debian when missing)."""
    try:
        docker_client.images.get(offline_image_name("3.11"))
    except Exception:  # noqa: BLE001 - missing: build it (shared state, like a pulled base: no test label)
        bootstrap_base(docker_client, "3.11", mirror=get_settings().debian_mirror)
    return build_env(load_env_spec(DEMO_ENV), docker_client=docker_client, offline=True, labels=export_labels).tag


def _workdir_tar() -> bytes:
    """What the server puts in a job's workdir (the SDK) plus this test's model code, owned by the job's user."""
    files = {**sdk_files(), "testmodels.py": TESTMODELS.encode(), "make_models.py": MAKE_MODELS.encode()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as tar:
        dirs = sorted({str(p) for name in files for p in Path(name).parents if str(p) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, USER_UID, USER_UID
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, USER_UID, USER_UID
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="session")
def job_container(docker_client, demo_image, export_labels):
    """A container of the demo image, with no network, holding the SDK and the saved models."""
    container = docker_client.containers.run(demo_image, ["sleep", "3600"], detach=True, network_mode="none",
                                             labels=export_labels)
    try:
        assert container.put_archive(WORKDIR, _workdir_tar())
        code, output = exec_in(container, "python", "make_models.py")
        assert code == 0, output
        yield container
    finally:
        container.remove(force=True)


def exec_in(container, *cmd: str) -> tuple[int, str]:
    env = {"PYTHONPATH": python_path(WORKDIR, None)}
    code, output = container.exec_run(list(cmd), environment=env, workdir=WORKDIR)
    return code, output.decode(errors="replace")


def export_in(container, model_dir: str, fmt: str, *extra: str) -> tuple[int, dict, str]:
    """Run the export as the server does; the exit status, the report and the command's output."""
    out = f"{WORKDIR}/out/{model_dir}-{fmt}"
    code, output = exec_in(container, "timeout", str(EXPORT_TIMEOUT_S), "python", "-m", "deepdock.sdk.export",
                           "--model", f"{model_dir}/model.pt", "--format", fmt, "--out", out, *extra)
    read, text = exec_in(container, "cat", f"{out}/export_report.json")
    assert read == 0, f"no report (exit status {code}):\n{output}"
    return code, json.loads(text), output


def file_sha256(container, path: str) -> str:
    code, output = exec_in(container, "sha256sum", path)
    assert code == 0, output
    return output.split()[0]


@pytest.mark.parametrize(("fmt", "method", "atol"), [("torchscript", "script", 1e-6), ("onnx", "onnx-dynamo", 1e-5)])
def test_digits_mlp_exports_within_tolerance(job_container, fmt, method, atol):
    code, report, output = export_in(job_container, "digits", fmt)
    assert code == 0, output
    assert report["ok"] is True and report["format"] == fmt and report["method"] == method and "error" not in report
    assert report["atol"] == atol and 0.0 <= report["max_abs_diff"] <= atol
    assert report["inputs_checked"] == 8 + 1000 and {1, 7, 64} <= set(report["batch_sizes"])
    assert report["torch_version"].startswith("2.13.0")
    assert report["signature"] == {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}],
                                   "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 10]}]}
    path = f"{WORKDIR}/out/digits-{fmt}/{report['file']}"
    assert report["sha256"] == file_sha256(job_container, path) and report["size"] > 30_000
    if fmt == "onnx":
        assert report["opset"] >= 18 and report["onnxruntime_version"]
    print(f"\ndigits MLP {fmt}: export {report['export_s']} s, whole command {report['duration_s']} s, "
          f"max |diff| {report['max_abs_diff']:.3g}")


def test_only_the_sdk_folder_is_needed(job_container):
    code, output = exec_in(job_container, "python", "-c",
                           "import sys, deepdock.sdk.export; print(sorted(m for m in sys.modules if m.startswith('deepdock')))")
    assert code == 0, output
    assert all(m == "deepdock" or m.startswith("deepdock.sdk") for m in json.loads(output.replace("'", '"')))


def test_a_model_scripting_rejects_is_traced(job_container):
    code, report, output = export_in(job_container, "varargs", "torchscript")
    assert code == 0, output
    assert report["method"] == "trace" and "variable number of arguments" in report["script_error"]
    assert report["max_abs_diff"] <= report["atol"]
    code, report, output = export_in(job_container, "varargs", "onnx")
    assert code == 0 and report["method"] == "onnx-dynamo", output


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_trace_that_does_not_generalize_fails_parity_with_exit_1(job_container, fmt):
    code, report, output = export_in(job_container, "branchy", fmt)
    assert code == 1, output
    assert report["ok"] is False and report["method"] == ("trace" if fmt == "torchscript" else "onnx-torchscript")
    assert report["max_abs_diff"] > report["atol"] and "parity check failed" in report["error"]
    worst = report["worst"]
    assert worst["batch_index"] >= 1 and worst["diff"] == report["max_abs_diff"]  # a generated batch, not the example
    assert 0 <= worst["row"] < worst["batch_size"] and len(worst["input_excerpt"]) == 8
    assert abs(worst["expected"] + worst["got"]) < 1e-4  # the other branch: the same value, negated
    assert any("TracerWarning" in w for w in report["warnings"])
    if fmt == "onnx":
        assert "data-dependent" in report["fallback_reason"]
    assert "parity check failed" in output


def test_a_state_dict_is_refused_with_exit_2(job_container):
    code, report, output = export_in(job_container, "state", "torchscript")
    assert code == 2 and report["ok"] is False
    assert "state_dict" in report["error"] and "torch.save(model)" in report["error"] and "TorchScript" in report["error"]
    assert "state_dict" in output


def test_a_torchscript_archive_is_the_reference_for_onnx(job_container):
    code, report, output = export_in(job_container, "scripted", "onnx")
    assert code == 0, output
    assert report["model_kind"] == "torchscript" and report["method"] == "onnx-torchscript"
    assert "TorchScript" in report["fallback_reason"] and report["max_abs_diff"] <= report["atol"]


def test_missing_onnxruntime_is_named(job_container):
    script = textwrap.dedent("""
        import runpy, sys
        sys.modules["onnxruntime"] = None  # as if the environment did not list it
        sys.argv = ["export", "--model", "digits/model.pt", "--format", "onnx", "--out", "out/no-ort"]
        runpy.run_module("deepdock.sdk.export", run_name="__main__")
    """)
    code, output = exec_in(job_container, "python", "-c", script)
    assert code == 2 and "onnxruntime" in output and "pip list" in output
    code, text = exec_in(job_container, "cat", "out/no-ort/export_report.json")
    assert code == 0 and json.loads(text)["ok"] is False
