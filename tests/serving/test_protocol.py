"""serving/protocol.py and tensors.py: v2 requests in JSON and with the binary extension, responses, and
every malformed request named."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

from deepdock.serving.protocol import encode_response, parse_request
from deepdock.serving.tensors import InvalidTensor, TensorSpec, conform

SPEC = TensorSpec("input", "float32", (-1, 4))


def binary_body(doc: dict, *blobs: bytes) -> tuple[bytes, int]:
    header = orjson.dumps(doc)
    return header + b"".join(blobs), len(header)


def test_a_json_request_gives_arrays_of_its_shape_and_dtype():
    body = orjson.dumps({"id": "r1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                                  "data": list(range(8))}]})
    request = parse_request(body, None)
    assert request.id == "r1" and request.inputs["input"].dtype == np.float32
    assert request.inputs["input"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert conform(SPEC, request.inputs["input"]) is request.inputs["input"]


def test_binary_inputs_are_read_in_order_without_json_numbers():
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.array([7, 9], dtype=np.int64)
    body, length = binary_body({"inputs": [
        {"name": "a", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}},
        {"name": "b", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": b.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}, a.tobytes(), b.tobytes())
    request = parse_request(body, length)
    assert np.array_equal(request.inputs["a"], a) and np.array_equal(request.inputs["b"], b)
    assert request.outputs == ["y"] and request.binary_outputs == {"y"}


@pytest.mark.parametrize(("body", "length", "message"), [
    (b"{not json", None, "not JSON"),
    (b'{"inputs": []}', None, "non-empty 'inputs'"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', None, "1 values for shape [2]"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "STRING", "data": [1, 2]}]}', None, "datatype 'STRING'"),
    (b'{"inputs": [{"name": "x", "shape": [-2], "datatype": "FP32", "data": []}]}', None, "non-negative"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]}', None, "not FP32"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither 'data'"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
     b' {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', None, "given twice"),
])
def test_malformed_json_requests_are_named(body, length, message):
    with pytest.raises(InvalidTensor, match=re.escape(message)):
        parse_request(body, length)


def test_malformed_binary_requests_are_named():
    a = np.zeros(4, dtype=np.float32)
    doc = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    body, length = binary_body(doc, a.tobytes())
    with pytest.raises(InvalidTensor, match="outside the body"):
        parse_request(body, len(body) + 1)
    with pytest.raises(InvalidTensor, match="runs past"):
        parse_request(body[:-4], length)
    with pytest.raises(InvalidTensor, match="not claimed"):
        parse_request(body + b"xx", length)
    doc["inputs"][0]["shape"] = [3]
    body, length = binary_body(doc, a.tobytes())
    with pytest.raises(InvalidTensor, match="16 bytes of binary data for FP32 \\[3\\]"):
        parse_request(body, length)


def test_conform_names_the_input_and_what_it_takes():
    with pytest.raises(InvalidTensor, match="got float64, the model takes float32 of shape \\[-1, 4\\]"):
        conform(SPEC, np.zeros((2, 4)))
    with pytest.raises(InvalidTensor, match="got shape \\[2, 5\\]"):
        conform(SPEC, np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(InvalidTensor, match="empty batch"):
        conform(SPEC, np.zeros((0, 4), dtype=np.float32))


def test_responses_are_json_or_binary_as_asked():
    y = np.array([[1.5, 2.5]], dtype=np.float32)
    body, length = encode_response("m", "3", "r1", [("y", y)], set())
    assert length is None
    assert orjson.loads(body) == {"model_name": "m", "model_version": "3", "id": "r1",
                                  "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]}
    body, length = encode_response("m", "3", None, [("y", y)], True)
    header = orjson.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(body[length:], dtype=np.float32).tolist() == [1.5, 2.5]
