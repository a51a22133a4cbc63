"""The serving image for real (envs/serving_image.py): an ONNX model's image built offline on the real
engine, with onnxruntime and without torch, run as a container that serves the v2 protocol; a new
version of the model rebuilds only the model layer."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from tests.integration.conftest import TEST_LABEL, remove_labelled
from tests.serving.conftest import CLASSES, FEATURES, make_mlp_bundle

from deepdock.envs.serving_image import SERVING_PORT, build_serving_image

pytestmark = pytest.mark.docker

READY_TIMEOUT_S = 30
CLIENT = """
import json, sys, urllib.request, urllib.error
def call(path, body=None):
    req = urllib.request.Request("http://127.0.0.1:PORT" + path, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError as e:
        return 0, {"error": str(e)}
print(json.dumps(call(sys.argv[1], sys.argv[2].encode() if len(sys.argv) > 2 else None)))
""".replace("PORT", str(SERVING_PORT))


@pytest.fixture(scope="module")
def labels(docker_client):
    value = {TEST_LABEL: f"serving-{uuid.uuid4().hex[:12]}"}
    yield value
    remove_labelled(docker_client, value)


@pytest.fixture(scope="module")
def built(docker_client, env_home, labels, tmp_path_factory):
    bundle = make_mlp_bundle(tmp_path_factory.mktemp("serve") / "v3")
    return bundle, build_serving_image(docker_client, bundle.folder, "onnx", labels=labels)


def _call(container, path: str, body: dict | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    args = ["python", "-c", CLIENT, path] + ([json.dumps(body)] if body is not None else [])
    code, out = container.exec_run(args)
    assert code == 0, out.decode()
    status, doc = json.loads(out.decode().strip().splitlines()[-1])
    return status, doc


def test_the_onnx_image_is_light_has_no_torch_and_serves(docker_client, built, labels):
    bundle, image = built
    assert image.size <= 300 * 1000**2, f"{image.size / 1e6:.0f} MB"
    container = docker_client.containers.run(image.tag, detach=True, network_mode="none", labels=labels)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _call(container, "/v2/health/ready")[0] != 200:
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.3)
        assert container.exec_run(["python", "-c", "import torch"]).exit_code != 0
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "1000"
        x = [[0.5] * FEATURES]
        status, doc = _call(container, "/v2/models/digits-mlp/infer",
                            {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": x[0]}]})
        assert status == 200 and doc["outputs"][0]["shape"] == [1, CLASSES]
        import numpy as np

        assert np.allclose(np.array(doc["outputs"][0]["data"]), bundle.reference(np.array(x, dtype=np.float32))[0],
                           atol=1e-5)
        status, doc = _call(container, "/v2/models/digits-mlp/infer",
                            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
        assert status == 400 and "the model takes float32 of shape [-1, 64]" in doc["error"]
    finally:
        container.remove(force=True)


def test_a_new_version_rebuilds_only_the_model_layer(docker_client, built, labels, tmp_path):
    _, first = built
    bundle = make_mlp_bundle(tmp_path / "v4")
    manifest = json.loads((bundle.folder / "deepdock-model.json").read_text())
    manifest["version"] = "4"
    (bundle.folder / "deepdock-model.json").write_text(json.dumps(manifest))
    second = build_serving_image(docker_client, bundle.folder, "onnx", labels=labels)
    assert second.tag != first.tag and second.server_tag == first.server_tag
    layers = [docker_client.images.get(i.tag).attrs["RootFS"]["Layers"] for i in (first, second)]
    assert layers[0][:-1] == layers[1][:-1] and layers[0][-1] != layers[1][-1]
    again = build_serving_image(docker_client, bundle.folder, "onnx", labels=labels)
    assert again.tag == second.tag and again.cached
