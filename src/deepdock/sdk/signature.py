"""Input/output signatures of a model, read from example values, and ``.npy`` headers without numpy.

A signature is what a caller of a model version needs to know to feed it: for each input and output
its name, dtype (numpy-style: ``"float32"``, ``"int64"``) and shape with the batch dimension dynamic
(``-1``)::

    {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}],
     "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 10]}]}

Anything with ``.shape`` and ``.dtype`` is a value (a torch tensor, a numpy array); a tuple or list of
values is named ``input_0``, ``input_1``...; a dict by its keys. Standard library only: the job's SDK
uses it inside any image, and the server reads the signature of an uploaded ``example_input.npy``
from its header (``npy_signature``) without importing numpy.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import Any

NPY_MAGIC = b"\x93NUMPY"
# numpy's own reader refuses headers above 10000 bytes by default; anything this large is not an example.
MAX_NPY_HEADER_BYTES = 1 << 20
BATCH_DIM = -1

# numpy type codes (the "kind" letter and the item size of a descr such as "<f4") -> numpy name.
_NPY_CODES = {
    "b1": "bool",
    "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64",
    "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
    "f2": "float16", "f4": "float32", "f8": "float64", "f16": "float128",
    "c8": "complex64", "c16": "complex128",
}
# Names that torch or numpy print that are not the numpy spelling.
_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32", "short": "int16",
    "cfloat": "complex64", "cdouble": "complex128", "bool_": "bool", "complex32": "complex32", "chalf": "complex32",
}


def dtype_name(dtype: Any) -> str:
    """numpy-style name of a torch dtype, numpy dtype or type, or a ``.npy`` descr: ``"float32"``..."""
    if isinstance(dtype, str):
        text = dtype
    elif isinstance(dtype, type):
        # np.float32 (a scalar type) by its name; Python's own types as numpy reads them.
        text = {float: "float64", int: "int64", bool: "bool", complex: "complex128"}.get(dtype, dtype.__name__)
    else:
        text = str(dtype)  # torch.float32 -> "torch.float32"; np.dtype("<f4") -> "float32"
    text = text.strip()
    if text.startswith("torch."):
        text = text[len("torch."):]
    if text[:1] in "<>=|" and text[1:] in _NPY_CODES:
        return _NPY_CODES[text[1:]]
    if text in _NPY_CODES:
        return _NPY_CODES[text]
    if text in ("O", "|O", "object"):
        return "object"
    return _ALIASES.get(text, text)


def _is_value(obj: Any) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "dtype")


def _spec(name: str, value: Any) -> dict[str, Any]:
    shape = [int(d) for d in tuple(value.shape)]
    if shape:
        shape[0] = BATCH_DIM
    return {"name": name, "dtype": dtype_name(value.dtype), "shape": shape}


def _flatten(obj: Any, base: str, top: bool) -> list[dict[str, Any]]:
    if _is_value(obj):
        return [_spec(base, obj)]
    if isinstance(obj, dict):
        out: list[dict[str, Any]] = []
        for key, value in obj.items():
            out.extend(_flatten(value, str(key) if top else f"{base}_{key}", False))
        return out
    if isinstance(obj, (tuple, list)):
        if len(obj) == 1 and top:
            return _flatten(obj[0], base, False)
        out = []
        for i, value in enumerate(obj):
            out.extend(_flatten(value, f"{base}_{i}", False))
        return out
    raise TypeError(f"cannot read a signature from a {type(obj).__name__}: expected a tensor or array (something with "
                    ".shape and .dtype), or a tuple, list or dict of them")


def inputs_signature(example: Any) -> dict[str, list[dict[str, Any]]]:
    return {"inputs": _flatten(example, "input", True)}


def outputs_signature(output: Any) -> dict[str, list[dict[str, Any]]]:
    """The ``outputs`` side: ``output`` for one value, ``output_0``... for a tuple, keys for a dict."""
    return {"outputs": _flatten(output, "output", True)}


def signature_of(example: Any, output: Any = None) -> dict[str, list[dict[str, Any]]]:
    """``{"inputs": [...], "outputs": [...]}`` of an example input (and, when given, the model's output for it)."""
    return {**inputs_signature(example), "outputs": outputs_signature(output)["outputs"] if output is not None else []}


def read_npy_header(data: bytes) -> tuple[str, tuple[int, ...], bool, int]:
    """``(dtype name, shape, fortran_order, header_len)`` of a ``.npy`` file's first bytes, without numpy.

    ``header_len`` is the offset of the array data. ``data`` needs only the header (the first few
    hundred bytes of a file are enough). Raises ``ValueError`` for anything that is not a plain
    ``.npy`` array (a pickle, a structured dtype, a truncated or malformed header).
    """
    data = bytes(data[: MAX_NPY_HEADER_BYTES + 12])
    if not data.startswith(NPY_MAGIC) or len(data) < 10:
        raise ValueError("not a .npy file (no \\x93NUMPY magic)")
    major = data[6]
    if major == 1:
        (length,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3):
        if len(data) < 12:
            raise ValueError("truncated .npy header")
        (length,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise ValueError(f"unsupported .npy format version {major}")
    if length > MAX_NPY_HEADER_BYTES:
        raise ValueError(f".npy header of {length} bytes is too large")
    if len(data) < start + length:
        raise ValueError("truncated .npy header")
    text = data[start: start + length].decode("utf-8" if major == 3 else "latin1")
    try:
        header = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"malformed .npy header: {text[:200]!r}") from exc
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        raise ValueError(f"malformed .npy header: {text[:200]!r}")
    descr, shape, fortran = header["descr"], header["shape"], header["fortran_order"]
    if not isinstance(descr, str):
        raise ValueError("structured dtypes are not supported in an example input")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"malformed .npy shape: {shape!r}")
    if not isinstance(fortran, bool):
        raise ValueError(f"malformed .npy fortran_order: {fortran!r}")
    name = dtype_name(descr)
    if name == "object":
        raise ValueError("an object array (a pickle) is not accepted as an example input")
    return name, shape, fortran, start + length


def npy_signature(data: bytes, name: str = "input") -> dict[str, list[dict[str, Any]]]:
    """The inputs signature of one ``.npy`` example from its header (what the server reads from an upload)."""
    dtype, shape, _, _ = read_npy_header(data)
    dims = list(shape)
    if dims:
        dims[0] = BATCH_DIM
    return {"inputs": [{"name": name, "dtype": dtype, "shape": dims}], "outputs": []}


def write_npy(path: str | Path, array: Any) -> Path:
    """Save ``array`` (a numpy array, or a torch tensor) as ``.npy`` at exactly ``path``; needs numpy."""
    try:
        import numpy as np
    except ImportError as exc:
        raise RuntimeError("numpy is needed to write an example input (.npy): add numpy to the environment's pip list"
                           ) from exc
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    path = Path(path)
    with path.open("wb") as f:  # a file object: np.save would append ".npy" to a name without it
        np.save(f, np.asarray(array), allow_pickle=False)
    return path
