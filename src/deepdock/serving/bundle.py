"""A model bundle: the folder a serving image holds, with ``deepdock-model.json`` beside the model file.

    {"name": "digits-mlp", "version": "3", "runtime": "onnx", "file": "model.onnx",
     "signature": {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}],
                   "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 10]}]}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepdock.serving.app import ServedModel
from deepdock.serving.runtimes import RUNTIMES
from deepdock.serving.tensors import V2_TO_NUMPY, TensorSpec

MANIFEST = "deepdock-model.json"
_NUMPY_NAMES = set(V2_TO_NUMPY.values())


class BundleError(ValueError):
    """The bundle is incomplete or inconsistent; the message says what is wrong."""


def write_manifest(folder: Path, name: str, version: str, runtime: str, file: str, signature: dict[str, Any]) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps({"name": name, "version": version, "runtime": runtime, "file": file,
                                "signature": signature}, indent=1, sort_keys=True))
    return path


def read_bundle(folder: Path) -> tuple[ServedModel, Path]:
    """The model it serves and the model file's path."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{folder} has no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{folder / MANIFEST} is not JSON: {exc}") from None
    try:
        runtime = str(doc["runtime"])
        signature = doc["signature"]
        model = ServedModel(name=str(doc["name"]), version=str(doc["version"]), runtime=runtime,
                            inputs=[TensorSpec.from_signature(e) for e in signature["inputs"]],
                            outputs=[TensorSpec.from_signature(e) for e in signature["outputs"]])
        file = str(doc["file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{folder / MANIFEST} lacks or misstates {exc}") from None
    if runtime not in RUNTIMES:
        raise BundleError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    if not model.inputs:
        raise BundleError("the signature has no inputs: the version needs an example input to be served")
    bad = [s for s in model.inputs + model.outputs if s.dtype not in _NUMPY_NAMES]
    if bad:
        raise BundleError(f"tensor {bad[0].name!r} has dtype {bad[0].dtype}, which the protocol does not carry")
    path = (folder / file).resolve()
    if folder.resolve() not in path.parents:
        raise BundleError(f"the model file {file!r} lies outside the bundle")
    return model, path
