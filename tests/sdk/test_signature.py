"""Signatures and .npy headers (deepdock.sdk.signature), and the parts of deepdock.sdk.export that need no torch.

The export itself (torch, onnx) is tested inside a real torch image: tests/integration/test_export_in_image.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deepdock.sdk import export
from deepdock.sdk.signature import (
    dtype_name,
    npy_signature,
    outputs_signature,
    read_npy_header,
    signature_of,
    write_npy,
)


class FakeTorchDtype:
    """What a torch dtype prints as, without torch."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"torch.{self.name}"


def fake_tensor(shape: tuple[int, ...], dtype: str) -> SimpleNamespace:
    return SimpleNamespace(shape=shape, dtype=FakeTorchDtype(dtype))


@pytest.mark.parametrize(("dtype", "name"), [
    (FakeTorchDtype("float32"), "float32"), (FakeTorchDtype("int64"), "int64"), (FakeTorchDtype("bool"), "bool"),
    (FakeTorchDtype("bfloat16"), "bfloat16"), (FakeTorchDtype("float16"), "float16"),
    (np.dtype("float32"), "float32"), (np.dtype(">i8"), "int64"), (np.dtype("uint8"), "uint8"), (np.dtype(bool), "bool"),
    (np.float64, "float64"), (np.int32, "int32"), (float, "float64"), (int, "int64"), (bool, "bool"),
    ("<f4", "float32"), ("|b1", "bool"), ("<c16", "complex128"), ("=u2", "uint16"), ("float", "float32"), ("long", "int64"),
])
def test_dtype_names_are_numpy_style(dtype, name):
    assert dtype_name(dtype) == name


def test_signature_of_one_value_has_a_dynamic_batch_dimension():
    sig = signature_of(np.zeros((8, 64), dtype=np.float32))
    assert sig == {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}], "outputs": []}
    assert signature_of(fake_tensor((2, 3, 4), "int64"))["inputs"] == [{"name": "input", "dtype": "int64", "shape": [-1, 3, 4]}]
    assert json.loads(json.dumps(sig)) == sig  # plain JSON types only


def test_signature_of_tuples_lists_and_dicts():
    ids, mask = np.zeros((4, 16), dtype=np.int64), np.ones((4, 16), dtype=bool)
    assert [i["name"] for i in signature_of((ids, mask))["inputs"]] == ["input_0", "input_1"]
    assert [i["name"] for i in signature_of([ids])["inputs"]] == ["input"]  # a one-element list is the value itself
    by_key = signature_of({"ids": ids, "mask": mask})["inputs"]
    assert by_key == [{"name": "ids", "dtype": "int64", "shape": [-1, 16]}, {"name": "mask", "dtype": "bool", "shape": [-1, 16]}]
    assert signature_of(np.float32(1.5))["inputs"] == [{"name": "input", "dtype": "float32", "shape": []}]


def test_outputs_signature_and_signature_with_output():
    logits, hidden = fake_tensor((8, 10), "float32"), fake_tensor((8, 2, 5), "float16")
    assert outputs_signature(logits) == {"outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 10]}]}
    nested = outputs_signature((logits, (hidden, logits)))["outputs"]
    assert [o["name"] for o in nested] == ["output_0", "output_1_0", "output_1_1"]
    assert [o["name"] for o in outputs_signature({"logits": logits, "aux": {"h": hidden}})["outputs"]] == ["logits", "aux_h"]
    sig = signature_of(np.zeros((8, 64), np.float32), logits)
    assert sig["outputs"] == [{"name": "output", "dtype": "float32", "shape": [-1, 10]}]


def test_signature_of_something_without_shape_is_a_clear_error():
    with pytest.raises(TypeError, match=r"\.shape and \.dtype"):
        signature_of([1.0, 2.0])


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("array", [
    np.arange(8 * 64, dtype=np.float32).reshape(8, 64), np.zeros((3,), dtype=np.int64), np.ones((2, 3, 4), dtype=bool),
    np.zeros((5, 2), dtype=">f8"), np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)), np.zeros((0, 4), np.uint8),
])
@pytest.mark.parametrize("version", [None, (2, 0), (3, 0)])
def test_read_npy_header_matches_numpy(array, version):
    data = _npy(array, version)
    dtype, shape, fortran, header_len = read_npy_header(data)
    assert dtype == dtype_name(array.dtype) and shape == array.shape
    assert fortran == (array.flags.f_contiguous and not array.flags.c_contiguous)
    assert len(data) - header_len == array.nbytes
    assert data[header_len:] == array.tobytes(order="F" if fortran else "C")
    # The header alone is enough.
    assert read_npy_header(data[:header_len]) == (dtype, shape, fortran, header_len)


@pytest.mark.parametrize(("data", "message"), [
    (b"PK\x03\x04 a zip, not npy", "not a .npy"),
    (b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4',", "truncated"),
    (b"\x93NUMPY\x09\x00\x10\x00{}              ", "version 9"),
    (b"\x93NUMPY\x01\x00\x10\x00not a dict here!", "malformed"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}", "malformed"),
    (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", "too large"),
])
def test_read_npy_header_rejects_what_is_not_a_plain_array(data, message):
    with pytest.raises(ValueError, match=message):
        read_npy_header(data)


def test_read_npy_header_rejects_structured_and_object_arrays():
    with pytest.raises(ValueError, match="structured"):
        read_npy_header(_npy(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")])))
    with pytest.raises(ValueError, match="object"):
        read_npy_header(_npy(np.array([{"a": 1}, None], dtype=object)))


def test_npy_signature_from_an_upload():
    assert npy_signature(_npy(np.zeros((8, 64), np.float32))) == {
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}], "outputs": []}


def test_write_npy_writes_exactly_the_path_given(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_npy(tmp_path / "example", array)  # no suffix: np.save alone would write example.npy
    assert path == tmp_path / "example" and not (tmp_path / "example.npy").exists()
    assert np.array_equal(np.load(path), array)
    tensor_like = SimpleNamespace(detach=lambda: SimpleNamespace(cpu=lambda: SimpleNamespace(numpy=lambda: array)))
    assert np.array_equal(np.load(write_npy(tmp_path / "t.npy", tensor_like)), array)
    assert read_npy_header(path.read_bytes())[:2] == ("float32", (3, 4))


# --- deepdock.sdk.export without torch ---------------------------------------------------------------

def test_batch_sizes_vary_and_add_up():
    sizes = export.batch_sizes(1000)
    assert sum(sizes) == 1000 and {1, 7, 64} <= set(sizes) and max(sizes) <= max(export.BATCH_SIZES)
    assert export.batch_sizes(0) == [] and export.batch_sizes(5) == [1, 4]


def test_generated_batches_are_seeded_and_shaped_like_the_example():
    example = [np.zeros((8, 64), np.float32), np.array([[0, 3], [5, 1]] * 4, dtype=np.int64), np.zeros((8, 2), bool)]
    first = list(export.generated_batches(example, 100, seed=0))
    again = list(export.generated_batches(example, 100, seed=0))
    other = list(export.generated_batches(example, 100, seed=1))
    assert [b[0].shape[0] for b in first] == export.batch_sizes(100)
    assert all(np.array_equal(a, b) for x, y in zip(first, again, strict=True) for a, b in zip(x, y, strict=True))
    assert not np.array_equal(first[-1][0], other[-1][0])
    floats = np.concatenate([b[0] for b in first])
    ints = np.concatenate([b[1] for b in first])
    assert floats.dtype == np.float32 and floats.shape == (100, 64) and abs(float(floats.mean())) < 0.05
    # every other batch over the example's range (an all-zero example has none: [-1, 1]), the others normal
    in_range = [b[0] for b in first[::2]]
    assert all(-1.0 <= b.min() and b.max() <= 1.0 for b in in_range)
    assert max(float(np.abs(b[0]).max()) for b in first[1::2]) > 1.5
    pixels = list(export.generated_batches([np.linspace(0, 1, 64, dtype=np.float32)[None]], 200, 0))[::2]
    assert all(-0.1 <= b[0].min() and b[0].max() <= 1.1 for b in pixels)
    assert ints.dtype == np.int64 and ints.min() == 0 and ints.max() == 5  # within [0, max(example) + 1)
    assert first[0][2].dtype == bool


def test_compare_finds_the_largest_difference_and_treats_nan_as_equal_to_nan():
    expected = [np.array([[0.0, 1.0], [np.nan, np.inf]], np.float32), np.array([1, 2], np.int64)]
    same = [e.copy() for e in expected]
    assert export.compare(expected, same) == (0.0, {"output": 0, "index": [0, 0], "expected": 0.0, "got": 0.0})
    off = [expected[0].copy(), np.array([1, 5], np.int64)]
    diff, where = export.compare(expected, off)
    assert diff == 3.0 and where["output"] == 1 and where["index"] == [1]
    nan = [np.array([[0.0, 1.0], [0.5, np.inf]], np.float32), expected[1]]
    assert export.compare(expected, nan)[0] == float("inf")
    assert export.compare(expected, [expected[0]])[0] == float("inf")
    assert "shape" in export.compare(expected, [expected[0][:1], expected[1]])[1]["reason"]


def test_check_parity_names_the_worst_batch_row_and_input():
    def reference(arrays):
        return [arrays[0] * 2]

    def exported(arrays):  # wrong where the first feature is above 2
        x = arrays[0]
        return [x * 2 + (x[:, :1] > 2.0)]

    example = [np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 3.0]], np.float32)]
    batches = iter([example, *export.generated_batches(example, 500, seed=0)])
    result = export.check_parity(reference, exported, batches, 1e-6, ["output"])
    assert result["inputs_checked"] == 504 and result["failing_batches"] >= 1
    assert abs(result["max_abs_diff"] - 1.0) < 1e-5  # the step, up to float32 rounding of 2x + 1
    assert result["max_abs_output"] > 4.0  # twice the largest input
    worst = result["worst"]
    assert worst["batch_index"] >= 1 and worst["output_name"] == "output"
    assert worst["input_excerpt"][0] > 2.0 and len(worst["input_excerpt"]) == 3
    ok = export.check_parity(reference, reference, iter([example]), 0.0, ["output"])
    assert ok["max_abs_diff"] == 0.0 and ok["failing_batches"] == 0


def test_check_parity_counts_an_export_that_fails_on_a_batch_as_a_mismatch():
    def exported(arrays):
        if arrays[0].shape[0] != 4:
            raise RuntimeError("shape '[4, 3]' is invalid")
        return [arrays[0]]

    example = [np.zeros((4, 3), np.float32)]
    result = export.check_parity(lambda a: [a[0]], exported, iter([example, *export.generated_batches(example, 8, 0)]),
                                 1e-6, ["output"])
    assert result["max_abs_diff"] == float("inf") and "invalid" in result["worst"]["reason"]


def test_load_example_npy_and_npz(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 64), np.float32))
    names, arrays = export.load_example(tmp_path / "x.npy")
    assert names == ["input"] and arrays[0].shape == (8, 64)
    np.savez(tmp_path / "two.npz", ids=np.zeros((4, 6), np.int64), x=np.zeros((4, 2), np.float32))
    names, arrays = export.load_example(tmp_path / "two.npz")
    assert names == ["ids", "x"] and [a.dtype for a in arrays] == [np.int64, np.float32]


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.float32(1.0)}, "scalar"),
    ({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, "different batch sizes"),
    ({"x": np.zeros((0, 2))}, "no rows"),
    ({"x": np.array(["a", "b"])}, "not a number"),
])
def test_load_example_rejects_what_cannot_be_a_batch(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(export.ExportError, match=message):
        export.load_example(tmp_path / "bad.npz")
    with pytest.raises(export.ExportError, match="does not exist"):
        export.load_example(tmp_path / "missing.npy")


def test_torchscript_archives_are_told_from_torch_save_zips(tmp_path):
    with zipfile.ZipFile(tmp_path / "ts.pt", "w") as zf:
        zf.writestr("model/constants.pkl", b"")
        zf.writestr("model/code/__torch__/m.py", b"")
    with zipfile.ZipFile(tmp_path / "saved.pt", "w") as zf:
        zf.writestr("archive/data.pkl", b"")
        zf.writestr("archive/data/0", b"")
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02 a pickle")
    assert export.is_torchscript_archive(tmp_path / "ts.pt")
    assert not export.is_torchscript_archive(tmp_path / "saved.pt")
    assert not export.is_torchscript_archive(tmp_path / "legacy.pt")


def test_flatten_outputs():
    a, b, c = object(), object(), object()
    assert export.flatten_outputs((a, {"x": b, "y": [c, None]})) == [a, b, c]


def test_report_is_written_and_exit_2_when_torch_is_missing(tmp_path, capsys):
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is importable here; the missing-torch path is for images without it")
    out = tmp_path / "out"
    code = export.main(["--model", str(tmp_path / "model.pt"), "--format", "onnx", "--out", str(out)])
    assert code == export.EXIT_ERROR
    report = json.loads((out / export.REPORT_FILE).read_text())
    assert report["ok"] is False and "torch is not importable" in report["error"]
    assert report["format"] == "onnx" and report["file"] == "model.onnx" and report["atol"] == export.DEFAULT_ATOL_ONNX
    assert "torch is not importable" in capsys.readouterr().err


def test_report_json_has_no_nan_or_infinity(tmp_path):
    path = export.write_report(tmp_path, {"max_abs_diff": None, "worst": {"expected": float("nan"), "got": float("-inf")},
                                          "path": Path("x")})
    assert json.loads(path.read_text()) == {"max_abs_diff": None, "worst": {"expected": "nan", "got": "-inf"}, "path": "x"}


def test_the_relative_part_of_the_tolerance_scales_with_the_outputs():
    def reference(arrays):
        return [arrays[0] * 40.0]

    def rounded(arrays):  # a few float32 steps off at |40|, as two correct kernels differ
        return [arrays[0] * 40.0 + 6e-6 * np.sign(arrays[0])]

    example = [np.ones((4, 3), np.float32)]
    absolute = export.check_parity(reference, rounded, iter([example]), 1e-6, ["output"])
    assert absolute["failing_batches"] == 1
    relative = export.check_parity(reference, rounded, iter([example]), 1e-6, ["output"], rtol=1e-6)
    assert relative["failing_batches"] == 0 and relative["max_abs_diff"] > 1e-6  # the plain figure is still reported
    wrong = export.check_parity(reference, lambda a: [a[0] * 41.0], iter([example]), 1e-6, ["output"], rtol=1e-6)
    assert wrong["failing_batches"] == 1
