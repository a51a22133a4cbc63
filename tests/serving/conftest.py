"""Model bundles built for real: ONNX graphs made with onnx.helper (an MLP with known weights, and an
identity), written with their manifest the way `model containerize` writes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepdock.serving.bundle import write_manifest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FEATURES, HIDDEN, CLASSES = 64, 32, 10


@dataclass
class MlpBundle:
    folder: Path
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def reference(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.w1 + self.b1, 0) @ self.w2 + self.b2


def _save(graph, folder: Path, name: str, signature: dict) -> Path:  # type: ignore[no-untyped-def]
    from onnx import helper

    folder.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    write_manifest(folder, name, "3", "onnx", "model.onnx", signature)
    return folder


def make_mlp_bundle(folder: Path, seed: int = 0) -> MlpBundle:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.1, (FEATURES, HIDDEN)).astype(np.float32)
    b1 = rng.normal(0, 0.1, HIDDEN).astype(np.float32)
    w2 = rng.normal(0, 0.1, (HIDDEN, CLASSES)).astype(np.float32)
    b2 = rng.normal(0, 0.1, CLASSES).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    signature = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, FEATURES]}],
                 "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, CLASSES]}]}
    _save(graph, folder, "digits-mlp", signature)
    return MlpBundle(folder, w1, b1, w2, b2)


def make_identity_bundle(folder: Path, shape: list[int]) -> Path:
    from onnx import TensorProto, helper

    dims = ["batch", *shape[1:]]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    signature = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, *shape[1:]]}],
                 "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, *shape[1:]]}]}
    return _save(graph, folder, "identity", signature)


@pytest.fixture
def mlp_bundle(tmp_path) -> MlpBundle:
    return make_mlp_bundle(tmp_path / "mlp")
