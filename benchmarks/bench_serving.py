"""The model server's own cost, each figure against its baselines in the same run.

    .venv/bin/python -m benchmarks.bench_serving [--only overhead|decode] [--seconds 8] [--rounds 3] [--json OUT]

- **overhead**: server-side cost per request of an identity model. Four servers, each one process
  (asyncio's loop, httptools' parser) pinned to CPU 0, driven by ``wrk`` (Debian's package) pinned to CPU 1
  with 32 connections for ``--seconds``, the same v2 JSON request (a [1, 4] FP32 tensor) every time:
  (a) deepdock.serving with an ONNX Identity graph (onnxruntime, batching on: max batch 32, max wait 0),
  on its own HTTP front (serving/http.py), and (a') the same server under uvicorn (``--http asgi``);
  (b) raw ASGI: a bare app that reads the body and answers a fixed v2 response (the floor of this
  stack); (c) FastAPI: pydantic models of the v2 request and response, echoing the tensor. With the
  server's core saturated, its CPU time per request is 1 / requests-per-second. Goal: deepdock ≤ 50 µs.
- **decode**: parsing a 1×3×224×224 FP32 request (``serving/protocol.py``): the binary extension
  (``np.frombuffer``) against the JSON path (a 150,528-number list), median of repeated parses.
  Goal: binary ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from deepdock.serving.protocol import parse_request

SERVER_CPU, LOAD_CPU = "0", "1"
CONNECTIONS = 32
REQUEST = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
READY_TIMEOUT_S = 30

RAW_ASGI = textwrap.dedent('''
    RESPONSE = (b'{"model_name":"identity","model_version":"1","outputs":[{"name":"output","datatype":"FP32",'
                b'"shape":[1,4],"data":[1.0,2.0,3.0,4.0]}]}')
    HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": RESPONSE})
''')
FASTAPI = textwrap.dedent('''
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Tensor(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        data: list[float]

    class InferIn(BaseModel):
        inputs: list[Tensor]

    class InferOut(BaseModel):
        model_name: str
        model_version: str
        outputs: list[Tensor]

    app = FastAPI()

    @app.post("/v2/models/identity/infer", response_model=InferOut)
    def infer(body: InferIn) -> InferOut:
        t = body.inputs[0]
        return InferOut(model_name="identity", model_version="1",
                        outputs=[Tensor(name="output", shape=t.shape, datatype=t.datatype, data=t.data)])
''')
WRK_SCRIPT = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def identity_bundle(folder: Path) -> Path:
    from onnx import TensorProto, helper, save

    from deepdock.serving.bundle import write_manifest

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    save(model, str(folder / "model.onnx"))
    write_manifest(folder, "identity", "1", "onnx", "model.onnx",
                   {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
                    "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 4]}]})
    return folder


def _serve(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *command], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/v2/models/identity/infer", json=REQUEST, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on {port} never answered")


def _wrk(port: int, seconds: int, script: Path) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}/v2/models/identity/infer"],
                         capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    return {"rps": round(rps, 1), "us_per_request": round(1e6 / rps, 1),
            "p50_ms": round(float(p50.group(1)) * scale[p50.group(2)], 3) if p50 else float("nan"),
            "non_2xx": int(errors.group(1)) if errors else 0}


def measure_overhead(seconds: int, rounds: int) -> dict[str, Any]:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset (apt-get install wrk util-linux)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        (root / "raw_asgi_app.py").write_text(RAW_ASGI)
        (root / "fastapi_app.py").write_text(FASTAPI)
        script = root / "request.lua"
        script.write_text(WRK_SCRIPT % orjson.dumps(REQUEST).decode())
        bundle = identity_bundle(root / "identity")
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "OMP_NUM_THREADS": "1"}
        uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"]
        deepdock = [sys.executable, "-m", "deepdock.serving", "--model-dir", str(bundle), "--host", "127.0.0.1",
                    "--threads", "1", "--max-batch-size", "32", "--max-wait-ms", "0"]
        servers = {
            "deepdock": lambda port: [*deepdock, "--port", str(port)],
            "deepdock_on_uvicorn": lambda port: [*deepdock, "--port", str(port), "--http", "asgi"],
            "raw_asgi": lambda port: [*uvicorn, "--port", str(port), "--loop", "asyncio", "raw_asgi_app:app"],
            "fastapi": lambda port: [*uvicorn, "--port", str(port), "--loop", "asyncio", "fastapi_app:app"],
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(rounds):  # the servers alternate, so a slow minute of the machine hits each of them
            for name, command in servers.items():
                port = free_port()
                proc = _serve(command(port), port, env)
                try:
                    _wrk(port, 2, script)  # warm-up
                    runs[name].append(_wrk(port, seconds, script))
                finally:
                    proc.terminate()
                    proc.wait(15)
                print(f"{name:20s} {runs[name][-1]}", flush=True)
    for name, measured in runs.items():
        results[name] = {"us_per_request": statistics.median(r["us_per_request"] for r in measured),
                         "runs_us": [r["us_per_request"] for r in measured],
                         "p50_ms": statistics.median(r["p50_ms"] for r in measured),
                         "non_2xx": sum(int(r["non_2xx"]) for r in measured)}
    results["deepdock_minus_raw_asgi_us"] = round(results["deepdock"]["us_per_request"]
                                                  - results["raw_asgi"]["us_per_request"], 1)
    return results


def measure_decode(repeats: int = 30) -> dict[str, Any]:
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    meta = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    header = orjson.dumps({"inputs": [{**meta, "parameters": {"binary_data_size": x.nbytes}}]})
    binary_body = header + x.tobytes()
    json_body = orjson.dumps({"inputs": [{**meta, "data": x.reshape(-1).tolist()}]})

    def median_ms(body: bytes, length: int | None) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            request = parse_request(body, length)
            times.append(time.perf_counter() - started)
            assert request.inputs["input"].shape == x.shape
        return round(statistics.median(times) * 1000, 3)

    binary_ms, json_ms = median_ms(binary_body, len(header)), median_ms(json_body, None)
    return {"binary_ms": binary_ms, "json_ms": json_ms, "binary_bytes": len(binary_body), "json_bytes": len(json_body),
            "speedup": round(json_ms / binary_ms, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["overhead", "decode"])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each server (medians reported)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.only in (None, "decode"):
        results["decode"] = measure_decode()
        print("decode", results["decode"], flush=True)
    if args.only in (None, "overhead"):
        results["overhead"] = measure_overhead(args.seconds, args.rounds)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
