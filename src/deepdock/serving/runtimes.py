"""The model runtimes a service can use: TorchScript (torch) and ONNX (onnxruntime), behind one call.

``predict`` takes the batched inputs by name (numpy arrays, already checked against the signature) and
returns the outputs by name, in the signature's order. It runs in the batcher's one worker thread; both
runtimes release the GIL while they compute, so the event loop keeps reading requests meanwhile. Each
runtime is imported only when it is used: an ONNX serving image has no torch at all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepdock.serving.tensors import TensorSpec

RUNTIMES = ("torchscript", "onnx")
# Files of an exported version (services/exports.py names them this way).
MODEL_FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}

Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class RuntimeUnavailable(RuntimeError):
    """The runtime's library or the model file is not there: a named error, not an ImportError."""


def load_runtime(runtime: str, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 threads: int = 0) -> Predict:
    """Load the model at ``path`` and return its predict function (``threads`` 0: the library's default)."""
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    if not path.is_file():
        raise RuntimeUnavailable(f"the model file {path} does not exist")
    if runtime == "onnx":
        return _onnx(path, inputs, outputs, threads)
    return _torchscript(path, inputs, outputs, threads)


def _onnx(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int) -> Predict:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailable("the onnx runtime needs onnxruntime, which this image does not have") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    model_inputs = [i.name for i in session.get_inputs()]
    model_outputs = [o.name for o in session.get_outputs()]
    # The signature's names are the caller's; the graph's are positional by the same order.
    feed_names = dict(zip([s.name for s in inputs], model_inputs, strict=False))
    out_names = [s.name for s in outputs] or model_outputs

    def predict(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = session.run(None, {feed_names.get(name, name): value for name, value in batch.items()})
        return dict(zip(out_names, results, strict=False))

    return predict


def _torchscript(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int) -> Predict:
    try:
        import torch
    except ImportError:
        raise RuntimeUnavailable("the torchscript runtime needs torch, which this image does not have") from None
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = torch.jit.load(str(path), map_location=device).eval()
    order = [s.name for s in inputs]
    out_names = [s.name for s in outputs] or ["output"]

    def predict(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(batch[name])).to(device) for name in order]
        with torch.inference_mode():
            result: Any = module(*args)
        if isinstance(result, dict):
            return {name: result[name].cpu().numpy() for name in out_names}
        if isinstance(result, (tuple, list)):
            return {name: value.cpu().numpy() for name, value in zip(out_names, result, strict=False)}
        return {out_names[0]: result.cpu().numpy()}

    return predict
