"""Tensors on the wire: the Open Inference Protocol's datatypes and numpy's, and a request's tensors checked
against a model version's signature (``sdk/signature.py``: names, numpy dtypes, shapes with ``-1`` for
the dynamic batch dimension).

A check failure is an ``InvalidTensor`` naming the input and what is wrong, which the server answers with
a 400: a caller learns at once that ``input`` wants ``float32`` of shape ``[-1, 64]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# v2 datatype -> numpy dtype name (BYTES, strings of bytes, is not served: no model here takes them).
V2_TO_NUMPY = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}
# The same by dtype object: ``dtype.name`` builds a string on every call (~15 µs), a dict lookup does not.
_DTYPES = {k: np.dtype(v) for k, v in V2_TO_NUMPY.items()}
V2_BY_DTYPE = {dtype: k for k, dtype in _DTYPES.items()}
DYNAMIC = -1
# The most elements one request's tensor may have (4 GiB of float32 would be 1 << 30).
MAX_ELEMENTS = 1 << 28


class InvalidTensor(ValueError):
    """A tensor that does not match what the model takes; the message names it."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name
    shape: tuple[int, ...]  # -1 where any size goes (the batch dimension, at least)
    np_dtype: np.dtype[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "np_dtype", np.dtype(self.dtype) if self.dtype in NUMPY_TO_V2 else np.dtype("O"))

    @property
    def datatype(self) -> str:
        return NUMPY_TO_V2.get(self.dtype, self.dtype.upper())

    def describe(self) -> str:
        return f"{self.dtype} of shape {list(self.shape)}"

    @classmethod
    def from_signature(cls, entry: dict[str, Any]) -> TensorSpec:
        return cls(name=str(entry["name"]), dtype=str(entry["dtype"]), shape=tuple(int(d) for d in entry["shape"]))


def numpy_dtype(datatype: str, name: str) -> np.dtype[Any]:
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise InvalidTensor(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(V2_TO_NUMPY)}") from None


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidTensor(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise InvalidTensor(f"input {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
    return tuple(shape)


def from_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """A tensor given as JSON ``data``: flat (row-major) or nested lists of numbers."""
    dtype = numpy_dtype(datatype, name)
    try:
        array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidTensor(f"input {name!r}: data is not {datatype} numbers ({exc})") from None
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidTensor(f"input {name!r}: {array.size} values for shape {list(shape)} ({expected} expected)")
    return array.reshape(shape)


def from_binary(name: str, datatype: str, shape: tuple[int, ...], raw: memoryview) -> np.ndarray:
    """A tensor from the binary extension: raw little-endian bytes, row-major, no copy."""
    dtype = numpy_dtype(datatype, name).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidTensor(f"input {name!r}: {len(raw)} bytes of binary data for {datatype} {list(shape)} "
                            f"({expected} expected)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def conform(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """``array`` if it is what ``spec`` takes, else ``InvalidTensor`` naming the input."""
    if array.dtype != spec.np_dtype:
        raise InvalidTensor(f"input {spec.name!r}: got {array.dtype.name}, the model takes {spec.describe()}")
    if array.ndim != len(spec.shape) or any(want not in (DYNAMIC, got) for want, got in zip(spec.shape, array.shape,
                                                                                         strict=True)):
        raise InvalidTensor(f"input {spec.name!r}: got shape {list(array.shape)}, the model takes {spec.describe()}")
    if array.ndim and array.shape[0] == 0:
        raise InvalidTensor(f"input {spec.name!r}: an empty batch")
    return array
