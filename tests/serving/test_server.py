"""The model server for real: ``python -m deepdock.serving`` in its own process (uvicorn, onnxruntime) on
a loopback port, serving an ONNX MLP whose weights the test knows. JSON and binary requests give the
model's outputs; metadata comes from the signature; every bad request is a 4xx naming what is wrong,
and the server keeps serving; Prometheus metrics count it all."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.serving.conftest import CLASSES, FEATURES, MlpBundle, make_mlp_bundle

START_TIMEOUT_S = 30
MAX_BODY_BYTES = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, bundle: MlpBundle, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.bundle, self.url, self.proc = bundle, url, proc
        self.http = httpx.Client(base_url=url, timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    bundle = make_mlp_bundle(Path(tmp_path_factory.mktemp("bundle")) / "mlp")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deepdock.serving", "--model-dir", str(bundle.folder),
                             "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", "16",
                             "--max-wait-ms", "2", "--threads", "1", "--max-body-bytes", str(MAX_BODY_BYTES)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("the model server did not become ready")
    server = Served(bundle, url, proc)
    yield server
    server.http.close()
    proc.terminate()
    proc.wait(15)


def infer_json(served: Served, x: np.ndarray, **extra) -> httpx.Response:  # type: ignore[no-untyped-def]
    body = {"id": "req-1", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.reshape(-1).tolist()}], **extra}
    return served.http.post("/v2/models/digits-mlp/infer", content=orjson.dumps(body))


def test_health_and_metadata_come_from_the_signature(served):
    assert served.http.get("/v2/health/live").json() == {"live": True}
    assert served.http.get("/v2/models/digits-mlp/ready").json() == {"name": "digits-mlp", "ready": True}
    meta = served.http.get("/v2/models/digits-mlp").json()
    assert meta == {"name": "digits-mlp", "versions": ["3"], "platform": "onnx",
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
                    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, CLASSES]}]}
    assert served.http.get("/v2/models/digits-mlp/versions/3").status_code == 200
    assert "binary_tensor_data" in served.http.get("/v2").json()["extensions"]


def test_json_inference_gives_the_models_outputs(served):
    x = np.random.default_rng(1).random((3, FEATURES), dtype=np.float32)
    r = infer_json(served, x)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "req-1" and doc["model_version"] == "3"
    (out,) = doc["outputs"]
    assert out["name"] == "output" and out["shape"] == [3, CLASSES] and out["datatype"] == "FP32"
    assert np.allclose(np.array(out["data"]).reshape(3, CLASSES), served.bundle.reference(x), atol=1e-5)


def test_binary_requests_and_responses(served):
    x = np.random.default_rng(2).random((5, FEATURES), dtype=np.float32)
    header = orjson.dumps({"inputs": [{"name": "input", "shape": [5, FEATURES], "datatype": "FP32",
                                        "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}})
    r = served.http.post("/v2/models/digits-mlp/infer", content=header + x.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 5 * CLASSES * 4
    y = np.frombuffer(r.content[length:], dtype=np.float32).reshape(5, CLASSES)
    assert np.allclose(y, served.bundle.reference(x), atol=1e-5)


def test_concurrent_requests_are_answered_each_with_its_own_rows(served):
    rng = np.random.default_rng(3)
    xs = [rng.random((1 + i % 3, FEATURES), dtype=np.float32) for i in range(24)]

    async def run():  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            import asyncio

            bodies = [orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                                "data": x.reshape(-1).tolist()}]}) for x in xs]
            return await asyncio.gather(*(client.post("/v2/models/digits-mlp/infer", content=b) for b in bodies))

    import asyncio

    for x, r in zip(xs, asyncio.run(run()), strict=True):
        y = np.array(r.json()["outputs"][0]["data"]).reshape(x.shape[0], CLASSES)
        assert np.allclose(y, served.bundle.reference(x), atol=1e-5)


@pytest.mark.parametrize(("request_body", "headers", "status", "message"), [
    ({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]}, {}, 400,
     "input 'input': got shape [1, 63], the model takes float32 of shape [-1, 64]"),
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}]}, {}, 400,
     "input 'input': got float64"),
    ({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}, {}, 400,
     "missing input 'input'"),
    ({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
      "outputs": [{"name": "logits"}]}, {}, 400, "no output 'logits'"),
    (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]}',
     {"Inference-Header-Content-Length": "9999"}, 400, "outside the body"),
    (b"x" * (MAX_BODY_BYTES + 1), {}, 413, "larger than"),
])
def test_bad_requests_are_4xx_naming_the_problem_and_the_server_keeps_serving(served, request_body, headers,
                                                                                status, message):
    content = request_body if isinstance(request_body, bytes) else orjson.dumps(request_body)
    r = served.http.post("/v2/models/digits-mlp/infer", content=content, headers=headers)
    assert r.status_code == status and message in r.json()["error"]
    assert infer_json(served, np.zeros((1, FEATURES), dtype=np.float32)).status_code == 200


def test_unknown_models_and_routes(served):
    assert served.http.post("/v2/models/other/infer", content=b"{}").status_code == 404
    assert served.http.get("/v2/models/digits-mlp/infer").status_code == 405
    assert served.http.get("/nothing").status_code == 404


def test_metrics_count_requests_batches_and_errors(served):
    infer_json(served, np.zeros((2, FEATURES), dtype=np.float32))
    text = served.http.get("/metrics").text
    assert 'deepdock_serving_requests_total{code="200",model="digits-mlp"}' in text
    assert 'deepdock_serving_requests_total{code="400",model="digits-mlp"}' in text
    assert "deepdock_serving_batch_rows_bucket" in text and "deepdock_serving_request_seconds_count" in text
    assert "deepdock_serving_in_flight_requests{model=\"digits-mlp\"}" in text and "deepdock_serving_queued_requests" in text
