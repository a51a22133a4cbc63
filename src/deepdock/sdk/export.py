"""Export a registered model to TorchScript or ONNX, and prove the export computes what the model does.

Runs inside the model's own training image (which has torch, and onnx/onnxruntime when the environment
lists them), started by the server as::

    python -m deepdock.sdk.export --model model.pt --format torchscript|onnx --out OUT \\
        [--example example_input.npy] [--generated 1000] [--atol-torchscript 1e-6] [--atol-onnx 1e-5] [--seed 0]

The export is only worth registering when it agrees with the eager model, so every export is reloaded
from disk and run next to the eager model on the example input and on ``--generated`` seeded random rows
of the same per-row shape and dtype (floats: every other batch uniform over the example's value range
widened by a tenth each side, the others a centred normal at the example's scale; integers within the
example's), in batches of varied sizes (1, 7, 64, ...) so that a batch size
baked into the graph shows up. ``OUT/export_report.json`` is always written (see ``new_report``); exit
status 0 = exported and within tolerance, 1 = exported but the parity check failed (the report's
``worst`` names the batch, row, input and difference), 2 = anything else (the report's ``error``).

TorchScript: ``torch.jit.script`` keeps control flow, so it is tried first; a model it cannot compile is
traced with the example input instead (``method: "trace"``, with the scripting error and the tracer's
warnings in the report). A trace records the one path the example took, which is exactly what the parity
check on generated inputs catches.

ONNX exporter choice (measured with torch 2.13.0, onnx 1.23.1, onnxruntime 1.30.0, onnxscript 0.7.2):
the torch.export-based exporter (``dynamo=True``, the default since torch 2.9, needs ``onnxscript``) is
used first. It is the maintained path (the TorchScript-based exporter warns that it is deprecated and to
be removed), it refuses data-dependent control flow where a trace silently keeps the branch the
example took, and a named ``torch.export.Dim("batch")`` makes a symbolic batch axis (a batch size the
model turns into a Python int still becomes a constant in either exporter: the parity check's varied
batch sizes are what catch that). Both exporters produced a correct dynamic-batch
model for the demo MLP (max |diff| vs eager about 3e-7; dynamo a few seconds, the legacy one 0.1 s).
The legacy exporter (``dynamo=False``, opset 18, ``dynamic_axes``) is the fallback, recorded as ``method:
"onnx-torchscript"`` with the reason, in the three cases where the dynamo exporter cannot run:
the reference is a TorchScript archive (torch.export takes only ``nn.Module``), ``onnxscript`` is not
installed, or torch.export fails on the model (data-dependent control flow, for one; the legacy exporter
then traces it, and the parity check judges the result). The dynamo exporter keeps its own opset (20
with torch 2.13): asking for a lower one adds a version-conversion pass that can fail on its own.

Standard library, torch, numpy and onnx/onnxruntime(/onnxscript) only: the deepdock package is not in
the image, only its ``sdk`` folder is (see ``deepdock.sdk``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import re
import sys
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deepdock.sdk.signature import signature_of

FORMATS = ("torchscript", "onnx")
FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
REPORT_FILE = "export_report.json"
EXAMPLE_FILE = "example_input.npy"  # what register_model writes beside model.pt
DEFAULT_GENERATED = 1000
DEFAULT_ATOL_TORCHSCRIPT = 1e-6
DEFAULT_ATOL_ONNX = 1e-5
# Relative part of the tolerance (numpy's allclose: |diff| <= atol + rtol * |eager|): float32 keeps ~7
# digits, so two correct kernels (torch's, onnxruntime's) rounding a logit near 40 differ by a few 1e-6
# (9.5e-6 measured on the demo MLP), and an absolute bound alone would pass or fail on the machine's
# kernels. 1e-6 is ~8 float32 steps; the figure reported is still the plain max abs diff.
DEFAULT_RTOL = 1e-6
# Cycled until --generated rows are used up: single rows, odd sizes and large ones exercise the batch axis.
BATCH_SIZES = (1, 7, 64, 2, 33, 128, 5, 256)
LEGACY_OPSET = 18
# Above this much weight the dynamo exporter writes the weights to model.onnx.data (protobuf's 2 GiB cap).
EXTERNAL_DATA_BYTES = 1536 << 20
EXCERPT_VALUES = 8
MAX_WARNINGS = 5
MAX_MESSAGE_CHARS = 2000

EXIT_OK, EXIT_PARITY, EXIT_ERROR = 0, 1, 2
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY_HEADING = "## Exception summary"

Arrays = list[Any]  # one numpy array per model input, all with the same batch size


class ExportError(Exception):
    """A failure other than a parity mismatch (exit status 2): the message goes to the report and stderr."""


def _short(exc: BaseException) -> str:
    """One exception as text for the report: no terminal colours, torch.onnx's summary rather than its advice."""
    text = ANSI_RE.sub("", f"{type(exc).__name__}: {exc}".strip())
    if SUMMARY_HEADING in text:  # torch.onnx's TorchExportError: the cause is under this heading
        summary = text.split(SUMMARY_HEADING, 1)[1].strip().split("\n\n")[0].strip()
        text = f"{type(exc).__name__}: {summary}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ExportError(f"torch is not importable in this image ({exc}): export runs in the model's own "
                          "training environment, which must have torch") from exc
    return torch


def _import_numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:
        raise ExportError("numpy is not installed in this image: add numpy to the environment's pip list") from exc
    return numpy


def _import_onnx() -> tuple[Any, Any]:
    missing = []
    try:
        import onnx
    except ImportError:
        missing.append("onnx")
    try:
        import onnxruntime
    except ImportError:
        missing.append("onnxruntime")
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}, which this image does not have: add "
                          f"{', '.join(missing)} to the environment's pip list (and onnxscript for the torch.export-based "
                          "exporter), then rebuild the environment")
    return onnx, onnxruntime


# --- loading ---------------------------------------------------------------------------------------

def is_torchscript_archive(path: Path) -> bool:
    """A ``torch.jit.save`` file: a zip with ``constants.pkl`` and ``code/`` (``torch.save`` zips have neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def load_model(path: Path) -> tuple[Any, str]:
    """The eager reference in eval mode, and what it was: ``"module"`` (a pickled nn.Module) or ``"torchscript"``."""
    torch = _import_torch()
    if not path.is_file():
        raise ExportError(f"model file {path} does not exist")
    if is_torchscript_archive(path):
        model, kind = torch.jit.load(str(path), map_location="cpu"), "torchscript"
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except (AttributeError, ModuleNotFoundError) as exc:
            raise ExportError(f"cannot unpickle the model in {path.name} ({_short(exc)}): the model's class must be "
                              "importable here; define it in a module of the job's code, not in the script run as "
                              "__main__") from exc
        if isinstance(obj, dict):
            raise ExportError(f"{path.name} holds a dict (a state_dict or a checkpoint), not a model: export needs a "
                              "full module saved with torch.save(model) (what sdk.register_model writes) or a "
                              "TorchScript file (torch.jit.save)")
        if not isinstance(obj, torch.nn.Module):
            raise ExportError(f"{path.name} holds a {type(obj).__name__}, not a torch.nn.Module: export needs a full "
                              "module saved with torch.save(model) or a TorchScript file")
        model, kind = obj, "module"
    model.eval()
    return model, kind


def load_example(path: Path) -> tuple[list[str], Arrays]:
    """The example's inputs: one ``.npy`` is the input ``input``; an ``.npz`` gives positional inputs by its keys."""
    np = _import_numpy()
    if not path.is_file():
        raise ExportError(f"example input {path} does not exist: pass --example, a .npy of a few input rows (it fixes the "
                          "input's shape and dtype)")
    try:
        loaded = np.load(str(path), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise ExportError(f"cannot read the example input {path.name}: {_short(exc)}") from exc
    if isinstance(loaded, np.ndarray):
        named = {"": loaded}
    else:
        with loaded:
            named = {key: loaded[key] for key in loaded.files}
    if not named:
        raise ExportError(f"the example input {path.name} holds no array")
    for key, array in named.items():
        label = key or path.name
        if array.ndim == 0:
            raise ExportError(f"example input {label} is a scalar: it needs a batch dimension first")
        if array.dtype.kind not in "biufc":
            raise ExportError(f"example input {label} has dtype {array.dtype}, not a number or bool type")
    sizes = {int(a.shape[0]) for a in named.values()}
    if len(sizes) != 1:
        raise ExportError(f"the example inputs have different batch sizes: {sorted(sizes)}")
    if 0 in sizes:
        raise ExportError("the example input has no rows")
    if list(named) == [""]:
        return ["input"], [named[""]]
    return list(named), list(named.values())


# --- inputs ------------------------------------------------------------------------------------------

def batch_sizes(total: int) -> list[int]:
    """Sizes from ``BATCH_SIZES`` in turn, the last one cut, adding up to ``total``."""
    sizes, left, i = [], max(0, total), 0
    while left > 0:
        size = min(BATCH_SIZES[i % len(BATCH_SIZES)], left)
        sizes.append(size)
        left -= size
        i += 1
    return sizes


def _random_like(np: Any, rng: Any, example: Any, rows: int, in_range: bool = True) -> Any:
    shape = (rows, *example.shape[1:])
    kind = example.dtype.kind
    if kind == "f":
        finite = example[np.isfinite(example)] if example.size else example
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
        if not in_range:
            # Centred normal at the example's scale, signs and all: what takes a data-dependent branch the
            # example never took (a trace's blind spot), at magnitudes the model is fed.
            scale = (high - low) / 2 if high > low else max(abs(high), 1.0)
            return (rng.standard_normal(shape) * scale).astype(example.dtype)
        # Over the example's own range, widened by a tenth on each side: the domain the model is fed.
        # Standard-normal rows far outside it (digits pixels are in [0, 1]) drive the MLP's logits to ~44,
        # where float32's spacing alone is 4e-6.
        margin = (high - low) * 0.1 if high > low else max(abs(high), 1.0)
        return rng.uniform(low - margin, high + margin, size=shape).astype(example.dtype)
    if kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(example.dtype)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    # Integers are usually indices (token ids, classes): stay within what the example used.
    high = int(example.max()) + 1 if example.size else 1
    low = min(0, int(example.min())) if example.size and kind == "i" else 0
    return rng.integers(low, max(high, low + 1), size=shape, dtype=example.dtype)


def generated_batches(example: Arrays, total: int, seed: int) -> Iterator[Arrays]:
    """``total`` seeded random rows shaped like the example's, one list of arrays per batch."""
    np = _import_numpy()
    rng = np.random.default_rng(seed)
    for index, size in enumerate(batch_sizes(total)):
        yield [_random_like(np, rng, array, size, in_range=index % 2 == 0) for array in example]


# --- running and comparing ---------------------------------------------------------------------------

def flatten_outputs(output: Any) -> list[Any]:
    """A model's outputs as a flat list of tensors/arrays: tuples and lists in order, dicts by their values."""
    if isinstance(output, dict):
        return [leaf for value in output.values() for leaf in flatten_outputs(value)]
    if isinstance(output, (tuple, list)):
        return [leaf for value in output for leaf in flatten_outputs(value)]
    if output is None:
        return []
    return [output]


def torch_runner(model: Any) -> Callable[[Arrays], list[Any]]:
    torch = _import_torch()

    def run(arrays: Arrays) -> list[Any]:
        # Fresh tensors per call: a model that changes its input in place cannot affect the other side.
        args = tuple(torch.from_numpy(a.copy()) for a in arrays)
        with torch.no_grad():
            out = flatten_outputs(model(*args))
        return [t.detach().cpu().numpy() if hasattr(t, "detach") else _import_numpy().asarray(t) for t in out]

    return run


def onnx_runner(session: Any, input_names: list[str]) -> Callable[[Arrays], list[Any]]:
    graph_inputs = [i.name for i in session.get_inputs()]

    def run(arrays: Arrays) -> list[Any]:
        by_name = dict(zip(input_names, arrays, strict=True))
        if set(graph_inputs) <= set(by_name):
            feed = {name: by_name[name] for name in graph_inputs}
        else:  # renamed by the exporter: same order
            feed = dict(zip(graph_inputs, arrays, strict=False))
        return list(session.run(None, feed))

    return run


def _abs_diff(np: Any, e: Any, g: Any) -> tuple[Any, Any, Any]:
    """Both sides widened to 64 bits, and |e - g| with NaN = NaN, inf = the same inf, NaN vs a number = inf."""
    e64 = e.astype(np.complex128 if e.dtype.kind == "c" else np.float64)
    g64 = g.astype(np.complex128 if g.dtype.kind == "c" else np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(e64 - g64)
    diff = np.where((e64 == g64) | (np.isnan(e64) & np.isnan(g64)), 0.0, diff)
    return e64, g64, np.where(np.isnan(diff), np.inf, diff)


def excess(expected: list[Any], got: list[Any], rtol: float) -> float:
    """The largest ``|e - g| - rtol * |e|``: within ``atol`` everywhere means numpy's ``allclose(g, e, rtol,
    atol)``. Same-shaped outputs only (``compare`` has judged the shapes)."""
    np = _import_numpy()
    worst = 0.0
    for e, g in zip(expected, got, strict=True):
        e, g = np.asarray(e), np.asarray(g)
        if e.size == 0:
            continue
        e64, _, diff = _abs_diff(np, e, g)
        with np.errstate(invalid="ignore", over="ignore"):
            over = diff - rtol * np.abs(e64)
        worst = max(worst, float(np.nanmax(np.where(np.isinf(diff), np.inf, over))))
    return worst


def compare(expected: list[Any], got: list[Any]) -> tuple[float, dict[str, Any]]:
    """Largest |expected - got| over all outputs, and where: output index, element index.

    NaN equals NaN and inf equals the same inf; a NaN against a number, or a missing output or a shape
    that differs, is an infinite difference.
    """
    np = _import_numpy()
    if len(expected) != len(got):
        return math.inf, {"reason": f"{len(got)} outputs where the eager model gives {len(expected)}"}
    worst = 0.0
    where: dict[str, Any] = {}
    for k, (e, g) in enumerate(zip(expected, got, strict=True)):
        e, g = np.asarray(e), np.asarray(g)
        if e.shape != g.shape:
            return math.inf, {"output": k, "reason": f"output {k} has shape {list(g.shape)}, eager gives {list(e.shape)}"}
        if e.size == 0:
            continue
        e64, g64, diff = _abs_diff(np, e, g)
        flat = int(np.argmax(diff))
        value = float(diff.reshape(-1)[flat])
        if value > worst or not where:
            index = [int(i) for i in np.unravel_index(flat, diff.shape)]
            worst = max(worst, value)
            where = {"output": k, "index": index, "expected": e64.reshape(-1)[flat].item(), "got": g64.reshape(-1)[flat].item()}
    return worst, where


def check_parity(reference: Callable[[Arrays], list[Any]], exported: Callable[[Arrays], list[Any]],
                 batches: Iterator[Arrays], atol: float, output_names: list[str], rtol: float = 0.0) -> dict[str, Any]:
    """Run both sides on every batch (batch 0 is the example); the largest difference and where it is.

    A batch fails when some output differs by more than ``atol + rtol * |eager output|`` (numpy's
    ``allclose``); ``max_abs_diff`` is the plain largest difference, whatever the tolerance.

    Also the largest finite |output| of the eager model: an absolute tolerance means less the larger the
    outputs are (float32 keeps about 7 digits: outputs near 40 are 4e-6 apart), so the report gives the scale.
    """
    np = _import_numpy()
    rows, sizes, failing = 0, [], 0
    max_diff, worst, max_output, max_over = 0.0, None, 0.0, 0.0
    for index, arrays in enumerate(batches):
        size = int(arrays[0].shape[0])
        try:
            expected = reference(arrays)
        except Exception as exc:  # noqa: BLE001 - nothing to compare against
            raise ExportError(f"the eager model fails on generated batch {index} of size {size} (shaped like the example "
                              f"but for its batch dimension): {_short(exc)}") from exc
        for e in expected:
            values = np.abs(np.asarray(e, dtype=np.complex128 if np.asarray(e).dtype.kind == "c" else np.float64))
            values = values[np.isfinite(values)]
            max_output = max(max_output, float(values.max()) if values.size else 0.0)
        try:
            got = exported(arrays)
            diff, where = compare(expected, got)
            over = excess(expected, got, rtol) if rtol and math.isfinite(diff) and diff > atol else diff
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - an export that cannot run a batch the model runs is a mismatch
            diff, where = math.inf, {"reason": f"the exported model fails on this batch: {_short(exc)}"}
            over = diff
        rows += size
        sizes.append(size)
        failing += over > atol
        max_over = max(max_over, over)
        if worst is None or diff > max_diff:
            max_diff = diff
            row = where.get("index", [0])[0] if where.get("index") else 0
            first = arrays[0]
            excerpt = first[row].reshape(-1)[:EXCERPT_VALUES].tolist() if row < size else []
            worst = {"batch_index": index, "batch_size": size, "row": int(row), "input_excerpt": excerpt,
                     "diff": _finite(diff), **where}
            if "output" in worst and worst["output"] < len(output_names):
                worst["output_name"] = output_names[worst["output"]]
            for key in ("expected", "got"):  # complex values are not JSON
                if isinstance(worst.get(key), complex):
                    worst[key] = str(worst[key])
    return {"inputs_checked": rows, "batch_sizes": sizes, "failing_batches": failing, "max_abs_diff": max_diff,
            "max_abs_output": max_output, "max_excess": max_over, "worst": worst}


# --- exporters ---------------------------------------------------------------------------------------

def _warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    """The first line of each distinct warning; the tracer's (a trace that may not generalize) first."""
    texts: list[str] = []
    for w in sorted(caught, key=lambda w: w.category.__name__ != "TracerWarning"):
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0] if str(w.message).strip() else ''}"
        if text not in texts:
            texts.append(text[:500])
    return texts[:MAX_WARNINGS]


def export_torchscript(model: Any, args: tuple[Any, ...], path: Path) -> dict[str, Any]:
    """Script (or trace) ``model`` and save it at ``path``; what was done, for the report."""
    torch = _import_torch()
    info: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if isinstance(model, torch.jit.ScriptModule):
            compiled, info["method"] = model, "script"
            info["note"] = "the model file is already TorchScript: saved as it is"
        else:
            try:
                compiled, info["method"] = torch.jit.script(model), "script"
            except Exception as exc:  # noqa: BLE001 - anything scripting rejects: trace instead
                info["script_error"] = _short(exc)
                try:
                    compiled, info["method"] = torch.jit.trace(model, args, check_trace=False), "trace"
                except Exception as trace_exc:  # noqa: BLE001 - neither works: say why for both
                    raise ExportError(f"TorchScript export failed: torch.jit.script: {info['script_error']}; "
                                      f"torch.jit.trace with the example: {_short(trace_exc)}") from trace_exc
        compiled.save(str(path))
    if caught:
        info["warnings"] = _warning_texts(caught)
    return info


def _param_bytes(model: Any) -> int:
    try:
        tensors = [*model.parameters(), *model.buffers()]
    except Exception:  # noqa: BLE001 - an odd module: assume small
        return 0
    return sum(t.numel() * t.element_size() for t in tensors)


def _dynamic_batch(torch: Any, model: Any, args: tuple[Any, ...]) -> Any:
    """Dimension 0 of every input is one symbolic ``batch``, in the structure of ``forward``'s parameters
    (a ``forward(self, *inputs)`` takes a tuple where a ``forward(self, x)`` takes one entry per input)."""
    batch = torch.export.Dim("batch")
    shapes = torch.export.ShapesCollection()
    for tensor in args:
        shapes[tensor] = {0: batch}
    return shapes.dynamic_shapes(model, args)


def export_onnx(model: Any, args: tuple[Any, ...], path: Path, input_names: list[str], output_names: list[str],
                batched_outputs: list[bool]) -> dict[str, Any]:
    """Export with the torch.export-based exporter, or the TorchScript-based one where it cannot run."""
    torch = _import_torch()
    info: dict[str, Any] = {}
    fallback_reason = None
    if isinstance(model, torch.jit.ScriptModule):
        fallback_reason = "the model is TorchScript: the torch.export-based exporter takes only an nn.Module"
    else:
        try:
            import onnxscript  # noqa: F401 - the dynamo exporter needs it
        except ImportError:
            fallback_reason = "onnxscript is not installed (the torch.export-based exporter needs it)"
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("always")
        if fallback_reason is None:
            try:
                torch.onnx.export(model, args, str(path), dynamo=True, input_names=input_names, output_names=output_names,
                                  dynamic_shapes=_dynamic_batch(torch, model, args),
                                  external_data=_param_bytes(model) > EXTERNAL_DATA_BYTES, verbose=False)
                info["method"] = "onnx-dynamo"
            except Exception as exc:  # noqa: BLE001 - anything torch.export rejects: the legacy exporter
                fallback_reason = f"the torch.export-based exporter failed: {_short(exc)}"
        if fallback_reason is not None:
            for stale in (path, path.with_name(path.name + ".data")):
                stale.unlink(missing_ok=True)
            axes = {name: {0: "batch"} for name in input_names}
            axes.update({name: {0: "batch"} for name, batched in zip(output_names, batched_outputs, strict=True) if batched})
            try:
                torch.onnx.export(model, args, str(path), dynamo=False, input_names=input_names,
                                  output_names=output_names, dynamic_axes=axes, opset_version=LEGACY_OPSET)
            except Exception as exc:  # noqa: BLE001 - both exporters failed: say why for each
                raise ExportError(f"ONNX export failed. TorchScript-based exporter: {_short(exc)}. Tried it because "
                                  f"{fallback_reason}") from exc
            info["method"] = "onnx-torchscript"
            info["fallback_reason"] = fallback_reason
    if caught:
        info["warnings"] = _warning_texts(caught)
    return info


# --- the command -------------------------------------------------------------------------------------

def new_report(args: argparse.Namespace) -> dict[str, Any]:
    """Every key the report has, so a reader never has to guess which exist after a failure."""
    atol = args.atol_torchscript if args.format == "torchscript" else args.atol_onnx
    return {
        "ok": False, "format": args.format, "method": None, "file": FILES[args.format], "sha256": None, "size": None,
        "inputs_checked": 0, "max_abs_diff": None, "atol": atol, "rtol": args.rtol,
        "signature": None, "duration_s": None, "export_s": None, "check_s": None, "torch_version": None,
        "model": str(args.model), "example": None, "generated": args.generated, "seed": args.seed,
    }


def run_export(args: argparse.Namespace, report: dict[str, Any]) -> int:
    torch = _import_torch()
    _import_numpy()
    report["torch_version"] = torch.__version__
    out = Path(args.out)
    target = out / FILES[args.format]
    if args.format == "onnx":
        onnx, ort = _import_onnx()  # before any work: a missing package is the first thing to say
        report["onnx_version"], report["onnxruntime_version"] = onnx.__version__, ort.__version__
    model_path = Path(args.model)
    example_path = Path(args.example) if args.example else model_path.parent / EXAMPLE_FILE
    report["example"] = str(example_path)
    model, kind = load_model(model_path)
    report["model_kind"] = kind
    input_names, example = load_example(example_path)
    reference = torch_runner(model)
    example_args = tuple(torch.from_numpy(a.copy()) for a in example)
    try:
        with torch.no_grad():
            example_output = model(*example_args)
    except Exception as exc:  # noqa: BLE001 - the model itself rejects its example
        raise ExportError(f"the eager model fails on the example input: {_short(exc)}") from exc
    example_in = example[0] if input_names == ["input"] else dict(zip(input_names, example, strict=True))
    try:
        signature = signature_of(example_in, example_output)
    except TypeError as exc:
        raise ExportError(f"the model's output for the example is not only tensors ({exc}): an exported model returns "
                          "tensors, or tuples, lists or dicts of them") from exc
    report["signature"] = signature
    output_names = [o["name"] for o in signature["outputs"]]
    batched_outputs = [bool(o["shape"]) for o in signature["outputs"]]
    for stale in (target, target.with_name(target.name + ".data")):
        stale.unlink(missing_ok=True)

    started = time.perf_counter()
    if args.format == "torchscript":
        report.update(export_torchscript(model, example_args, target))
        exported = torch.jit.load(str(target), map_location="cpu")
        exported.eval()
        runner = torch_runner(exported)
    else:
        report.update(export_onnx(model, example_args, target, input_names, output_names, batched_outputs))
        onnx.checker.check_model(str(target))
        report["opset"] = next((o.version for o in onnx.load(str(target), load_external_data=False).opset_import
                                if o.domain in ("", "ai.onnx")), None)
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        runner = onnx_runner(session, input_names)
    report["export_s"] = round(time.perf_counter() - started, 3)
    report["sha256"], report["size"] = sha256_file(target), target.stat().st_size
    data_file = target.with_name(target.name + ".data")
    if data_file.exists():
        report["data_file"], report["data_sha256"] = data_file.name, sha256_file(data_file)

    started = time.perf_counter()
    batches = itertools.chain([example], generated_batches(example, args.generated, args.seed))
    parity = check_parity(reference, runner, batches, report["atol"], output_names, report["rtol"])
    report["check_s"] = round(time.perf_counter() - started, 3)
    worst = parity.pop("worst")
    report.update(parity)
    report["max_excess"] = _finite(parity.pop("max_excess"))
    if parity["failing_batches"] == 0:
        report["max_abs_diff"] = parity["max_abs_diff"]
        return EXIT_OK
    report["max_abs_diff"] = _finite(parity["max_abs_diff"])
    report["worst"] = worst
    where = f"batch {worst['batch_index']} (size {worst['batch_size']}) row {worst['row']}"
    reason = ""
    if "reason" in worst:  # one line in the summary; the report's worst has it whole
        lines = [line.strip() for line in str(worst["reason"]).splitlines() if line.strip()]
        reason = ": " + (lines[0] if len(lines) < 3 else f"{lines[0]} ... {lines[-1]}")[:400]
    report["error"] = (f"parity check failed: {parity['failing_batches']} of {len(parity['batch_sizes'])} batches differ "
                       f"from the eager model by more than atol={report['atol']:g} + rtol={report['rtol']:g}*|output|; "
                       f"largest |diff| "
                       f"{parity['max_abs_diff']:.3g} at {where}, eager outputs up to |{parity['max_abs_output']:.3g}|{reason}")
    return EXIT_PARITY


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deepdock.sdk.export", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", required=True, help="torch.save(model) file, or a TorchScript archive")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="folder for the exported file and export_report.json")
    parser.add_argument("--example", help=f".npy (or .npz for several inputs); default: {EXAMPLE_FILE} beside the model")
    parser.add_argument("--generated", type=int, default=DEFAULT_GENERATED, help="random rows to check besides the example")
    parser.add_argument("--atol-torchscript", type=float, default=DEFAULT_ATOL_TORCHSCRIPT)
    parser.add_argument("--atol-onnx", type=float, default=DEFAULT_ATOL_ONNX)
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative part of the tolerance: |diff| <= atol + rtol*|eager output| (numpy's allclose)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.generated < 0:
        parser.error("--generated must be 0 or more")
    return args


def _json_safe(value: Any) -> Any:
    """Non-finite floats as the strings "inf", "-inf", "nan" (JSON has no such numbers), anything odd as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_report(out: Path, report: dict[str, Any]) -> Path:
    path = out / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"export failed: cannot create the output folder {out}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = new_report(args)
    started = time.perf_counter()
    try:
        code = run_export(args, report)
    except ExportError as exc:
        report["error"], code = str(exc), EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - every failure ends in the report
        report["error"], code = _short(exc), EXIT_ERROR
        report["traceback"] = traceback.format_exc()[-MAX_MESSAGE_CHARS:]
    report["ok"] = code == EXIT_OK
    report["duration_s"] = round(time.perf_counter() - started, 3)
    write_report(out, report)
    if code != EXIT_OK:
        print(f"export failed: {report['error']}", file=sys.stderr)
    summary = ("ok", "format", "method", "file", "max_abs_diff", "atol", "inputs_checked", "duration_s")
    print(json.dumps(_json_safe({k: report.get(k) for k in summary})))
    return code


if __name__ == "__main__":
    sys.exit(main())
