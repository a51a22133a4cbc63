"""The Open Inference Protocol (KServe v2) inference request and response, with the binary tensor extension.

A request is a JSON object ``{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data" |
"parameters": {"binary_data_size": N}}], "outputs": [{"name", "parameters": {"binary_data": true}}]}``.
With the binary extension the body is that JSON (its length in the ``Inference-Header-Content-Length``
header) followed by each binary input's raw bytes, in the order of ``inputs``: an image-sized tensor is
read with ``np.frombuffer`` (no copy, no JSON number parsing). Outputs come back as JSON ``data``, or
binary when the request asks (per output, or ``"parameters": {"binary_data_output": true}``), in which
case the response is built the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from deepdock.serving.tensors import NUMPY_TO_V2, V2_BY_DTYPE, InvalidTensor, check_shape, from_binary, from_json_data

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = b"application/json"
BINARY_TYPE = b"application/octet-stream"


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    # Output names wanted (empty: all); those to send as binary; all binary (binary_data_output).
    outputs: list[str] = field(default_factory=list)
    binary_outputs: set[str] = field(default_factory=set)
    all_binary: bool = False


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidTensor(f"{what} must be a JSON object")
    return value


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """``InvalidTensor`` for anything malformed (the server answers 400 and keeps serving)."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 < header_length <= len(body):
            raise InvalidTensor(f"Inference-Header-Content-Length {header_length} is outside the body "
                                f"({len(body)} bytes)")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        doc = _object(orjson.loads(header), "the request")
    except orjson.JSONDecodeError as exc:
        raise InvalidTensor(f"the request is not JSON: {exc}") from None
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidTensor("the request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for raw in raw_inputs:
        item = _object(raw, "each input")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidTensor("each input needs a 'name'")
        if name in inputs:
            raise InvalidTensor(f"input {name!r} is given twice")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidTensor(f"input {name!r} needs a 'datatype'")
        shape = check_shape(name, item.get("shape"))
        size = _object(item.get("parameters") or {}, f"input {name!r}'s parameters").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidTensor(f"input {name!r}: binary_data_size {size!r} runs past the body's "
                                    f"{len(binary)} bytes of binary data")
            inputs[name] = from_binary(name, datatype, shape, binary[offset:offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = from_json_data(name, datatype, shape, item["data"])
        else:
            raise InvalidTensor(f"input {name!r} has neither 'data' nor a binary_data_size")
    if offset != len(binary):
        raise InvalidTensor(f"{len(binary) - offset} bytes of binary data were not claimed by any input")
    request = InferRequest(id=str(doc["id"]) if doc.get("id") is not None else None, inputs=inputs)
    params = _object(doc.get("parameters") or {}, "the request's parameters")
    request.all_binary = bool(params.get("binary_data_output", False))
    for raw in doc.get("outputs") or []:
        item = _object(raw, "each requested output")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidTensor("each requested output needs a 'name'")
        request.outputs.append(name)
        if _object(item.get("parameters") or {}, f"output {name!r}'s parameters").get("binary_data"):
            request.binary_outputs.add(name)
    return request


def encode_response(model: str, version: str, request_id: str | None, outputs: Sequence[tuple[str, np.ndarray]],
                    binary: set[str] | bool) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when some output is binary (else None)."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs:
        datatype = V2_BY_DTYPE.get(array.dtype) or NUMPY_TO_V2.get(array.dtype.name, array.dtype.name.upper())
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary is True or (binary and name in binary):
            data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = array.reshape(-1)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
