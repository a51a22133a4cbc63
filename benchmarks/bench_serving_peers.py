"""deepdock.serving against BentoML and LitServe on a model-bound MLP, with the in-process batched ceiling.

    .venv/bin/python -m benchmarks.bench_serving_peers [--seconds 6] [--connections 32,8]
        [--only deepdock,bentoml,litserve] [--json OUT]

The figure (the serving issue): a model-bound MLP (about 600 µs per sample at batch 1); deepdock's
requests/s ≥ 1.5× the best peer's at an equal or lower p99, and ≥ 70 % of the in-process batched ceiling
measured in the same run.

- **Model**: built here with torch (seed 0): 256 → 1536 → 1536 → 1536 → 10, ReLU between, scripted with
  ``torch.jit.script`` and saved once; every server loads that same file with the same torch (2.13.0) at one
  thread (``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``). Its batch-1 cost is measured and printed.
- **Ceiling**: the same TorchScript file called directly in this process, pinned to the server CPU, at the
  servers' max batch size (32): samples/s over ~2 s, before and after the servers; the higher one counts.
- **Servers**, each its whole process tree pinned to CPU 0 (``taskset``; children inherit it), adaptive
  batching on with max batch 32: (a) deepdock.serving from ``.venv`` (a TorchScript bundle, ``--max-wait-ms
  2 --threads 1``); (b) BentoML (``@bentoml.api(batchable=True, max_batch_size=32)``: its dispatcher picks the
  wait from a cost model, it has no max-wait knob) and (c) LitServe (``LitAPI(max_batch_size=32,
  batch_timeout=0.002)``), both from the peer venv (``bash benchmarks/peers/serving_venv.sh``; never a
  deepdock dependency) running ``benchmarks/peers/_serving_peer_*.py``.
- **Load**: ``wrk`` (Debian's, 1 thread) pinned to CPU 1, a Lua script POSTing one sample per request — the
  same 256 numbers in each server's own JSON: v2 ``inputs`` for deepdock, ``{"input": [...]}`` for LitServe,
  ``{"input": [[...]]}`` for BentoML. A 2 s warm-up, then ``--seconds`` at each of ``--connections`` (the
  first is the one the goals are judged at). Each server's answer to that sample is checked against the
  in-process output first. Also recorded: the server tree's CPU time per request (utime + stime from /proc)
  and, for deepdock, rows and model time per batch from its /metrics.

A peer venv that is missing is named with the command that makes it, and the rest is measured; a peer that
fails to start is recorded with its error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks.bench_serving import LOAD_CPU, SERVER_CPU, free_port

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
VENV_SCRIPT = PEERS / "serving_venv.sh"
DEFAULT_VENV = Path(os.environ.get("SERVING_PEERS_VENV", "/tmp/deepdock-bench-serving"))
SERVERS = ("deepdock", "bentoml", "litserve")

IN_FEATURES, HIDDEN, HIDDEN_LAYERS, OUT_FEATURES = 256, 1536, 3, 10
MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 2.0
WARMUP_S = 2
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15
CEILING_S = 2.0
GOAL_VS_PEER = 1.5
GOAL_VS_CEILING = 0.7
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A level-1 long string: BentoML's body holds "]]", which would end a plain [[...]] one.
WRK_SCRIPT = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [=[%s]=]\n'
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --- the model and the ceiling ---------------------------------------------------------------------------

def build_model(folder: Path) -> Path:
    """The scripted MLP as a deepdock TorchScript bundle in ``folder``; returns the model file."""
    import torch

    from deepdock.serving.bundle import write_manifest

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    width = IN_FEATURES
    for _ in range(HIDDEN_LAYERS):
        layers += [torch.nn.Linear(width, HIDDEN), torch.nn.ReLU()]
        width = HIDDEN
    layers.append(torch.nn.Linear(width, OUT_FEATURES))
    module = torch.jit.script(torch.nn.Sequential(*layers).eval())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.torchscript.pt"
    module.save(str(path))
    write_manifest(folder, "mlp", "1", "torchscript", path.name,
                   {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, IN_FEATURES]}],
                    "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, OUT_FEATURES]}]})
    return path


def measure_in_process(model_path: Path, sample: list[float]) -> dict[str, Any]:
    """Batch-1 cost and the batched ceiling of the saved model, this process pinned to the server CPU."""
    import torch

    torch.set_num_threads(1)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CPU)})
    try:
        model = torch.jit.load(str(model_path), map_location="cpu").eval()
        one = torch.tensor([sample], dtype=torch.float32)
        batch = one.repeat(MAX_BATCH_SIZE, 1) + torch.linspace(0, 1, MAX_BATCH_SIZE).unsqueeze(1)
        with torch.inference_mode():
            reference = model(one).numpy()[0]
            for _ in range(50):
                model(one)
                model(batch)
            times = []
            deadline = time.perf_counter() + 1.0
            while time.perf_counter() < deadline or len(times) < 200:
                started = time.perf_counter()
                model(one)
                times.append(time.perf_counter() - started)
            calls, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < CEILING_S:
                model(batch)
                calls += 1
    finally:
        os.sched_setaffinity(0, before)
    times.sort()
    return {"batch1_us_median": round(times[len(times) // 2] * 1e6, 1),
            "batch1_us_p90": round(times[int(len(times) * 0.9)] * 1e6, 1),
            f"batch{MAX_BATCH_SIZE}_us_per_call": round(elapsed / calls * 1e6, 1),
            "ceiling_samples_per_s": round(calls * MAX_BATCH_SIZE / elapsed, 1),
            "reference_output": reference.tolist()}


# --- the servers -----------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    command: Callable[[int], list[str]]
    path: str
    body: bytes
    output: Callable[[Any], list[float]]  # the answer's 10 numbers from its JSON
    env: dict[str, str]
    stop: signal.Signals = signal.SIGTERM
    rows_metric: str | None = None  # a histogram of rows per batch in its /metrics
    model_metric: str | None = None  # a histogram of model seconds per batch


def servers(bundle: Path, model_path: Path, sample: list[float], venv: Path, home: Path) -> dict[str, Server]:
    python = str(venv / "bin" / "python")
    return {
        "deepdock": Server(
            "deepdock",
            lambda port: [sys.executable, "-m", "deepdock.serving", "--model-dir", str(bundle), "--host", "127.0.0.1",
                          "--port", str(port), "--threads", "1", "--max-batch-size", str(MAX_BATCH_SIZE),
                          "--max-wait-ms", str(MAX_WAIT_MS)],
            "/v2/models/mlp/infer",
            orjson.dumps({"inputs": [{"name": "input", "shape": [1, IN_FEATURES], "datatype": "FP32", "data": sample}]}),
            lambda doc: doc["outputs"][0]["data"],
            {}, rows_metric="deepdock_serving_batch_rows", model_metric="deepdock_serving_model_seconds"),
        "bentoml": Server(
            "bentoml",
            lambda port: [str(venv / "bin" / "bentoml"), "serve", "_serving_peer_bentoml:MLP", "--working-dir",
                          str(PEERS), "--host", "127.0.0.1", "--port", str(port)],
            "/predict",
            orjson.dumps({"input": [sample]}),
            lambda doc: doc[0],
            {"PEER_MODEL": str(model_path), "PEER_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE), "BENTOML_HOME": str(home),
             "BENTOML_DO_NOT_TRACK": "true"},
            rows_metric="bentoml_service_adaptive_batch_size"),
        "litserve": Server(
            "litserve",
            lambda port: [python, str(PEERS / "_serving_peer_litserve.py"), "--model", str(model_path), "--port",
                          str(port), "--max-batch-size", str(MAX_BATCH_SIZE), "--batch-timeout-ms", str(MAX_WAIT_MS),
                          "--fast-queue"],
            "/predict",
            orjson.dumps({"input": sample}),
            lambda doc: doc["output"],
            {},
            signal.SIGINT),  # LitServe stops its workers on Ctrl-C; a SIGTERM leaves them behind
    }


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc), to account their CPU and to stop every one of them by id."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def start(server: Server, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *server.command(port)], env={**env, **server.env},
                                stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    url = f"http://127.0.0.1:{port}{server.path}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            resp = httpx.post(url, content=server.body, headers={"content-type": "application/json"}, timeout=2)
            if resp.status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.25)
    stop(proc, server.stop)
    raise RuntimeError(f"{server.name} did not answer {url} in {READY_TIMEOUT_S} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes], how: signal.Signals) -> None:
    pids = _tree(proc.pid)
    proc.send_signal(how)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    time.sleep(0.5)
    for pid in pids[1:]:  # what the server left behind (its workers), each by its own id
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def check_answer(server: Server, port: int, reference: list[float]) -> float:
    resp = httpx.post(f"http://127.0.0.1:{port}{server.path}", content=server.body,
                      headers={"content-type": "application/json"}, timeout=10)
    resp.raise_for_status()
    got = np.asarray(server.output(resp.json()), dtype=np.float64).reshape(-1)
    diff = float(np.max(np.abs(got - np.asarray(reference))))
    if got.shape != (OUT_FEATURES,) or diff > 1e-4:
        raise RuntimeError(f"{server.name} answered {got.tolist()}, not the model's {reference} (max diff {diff})")
    return diff


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, Any]:
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    scale = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def percentile(p: str) -> float:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return round(float(found.group(1)) * scale[found.group(2)], 2) if found else float("nan")

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": round(rps, 1), "p50_ms": percentile("50"), "p90_ms": percentile("90"), "p99_ms": percentile("99"),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(g) for g in socket_errors.groups()) if socket_errors else 0}


def _histogram(port: int, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram in the server's /metrics, over all its label sets."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = [0.0, 0.0]
    for i, part in enumerate(("sum", "count")):
        for found in re.finditer(rf"^{name}_{part}(?:\{{[^}}]*\}})? ([\d.e+-]+)$", text, re.MULTILINE):
            total[i] += float(found.group(1))
    return total[0], total[1]


def measure_server(server: Server, connections: list[int], seconds: int, env: dict[str, str], root: Path,
                   reference: list[float]) -> dict[str, Any]:
    port = free_port()
    script = root / f"{server.name}.lua"
    script.write_text(WRK_SCRIPT % server.body.decode())
    url = f"http://127.0.0.1:{port}{server.path}"
    proc = start(server, port, env, root / f"{server.name}.log")
    result: dict[str, Any] = {}
    try:
        result["max_abs_diff_vs_in_process"] = check_answer(server, port, reference)
        wrk(url, connections[0], WARMUP_S, script)
        for count in connections:
            pids = _tree(proc.pid)
            before_cpu = _cpu_s(pids)
            metrics = [m for m in (server.rows_metric, server.model_metric) if m]
            before = {m: _histogram(port, m) for m in metrics}
            point = wrk(url, count, seconds, script)
            used = _cpu_s(pids) - before_cpu
            served = point["rps"] * seconds
            point["server_cpu_us_per_request"] = round(used / served * 1e6, 1) if served else float("nan")
            point["server_cpu_share"] = round(used / seconds, 2)
            after = {m: _histogram(port, m) for m in metrics}
            batches = after[metrics[0]][1] - before[metrics[0]][1] if metrics else 0
            if batches:
                point["rows_per_batch"] = round((after[metrics[0]][0] - before[metrics[0]][0]) / batches, 1)
                if server.model_metric:
                    model_s = after[server.model_metric][0] - before[server.model_metric][0]
                    point["model_us_per_batch"] = round(model_s / batches * 1e6, 1)
                    point["model_share_of_wall"] = round(model_s / seconds, 2)
            result[f"c{count}"] = point
            print(f"  {server.name:9s} c={count:<3d} {point}", flush=True)
    finally:
        stop(proc, server.stop)
    return result


# --- the run ---------------------------------------------------------------------------------------------

def versions(venv: Path | None) -> dict[str, str]:
    import importlib.metadata as md

    found = {f"{p} (.venv)": md.version(p) for p in ("deepdock", "torch", "uvicorn", "httptools", "orjson")}
    if venv is not None:
        code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
                "('bentoml', 'litserve', 'torch', 'uvicorn', 'fastapi', 'starlette', 'pydantic')}))")
        out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            found.update({f"{p} (peer venv)": v for p, v in json.loads(out.stdout).items()})
    found["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return found


def goals(results: dict[str, Any], first: int) -> dict[str, Any]:
    key = f"c{first}"
    ceiling = results["ceiling_samples_per_s"]
    ours = results["servers"].get("deepdock", {}).get(key)
    peers = {n: r[key] for n, r in results["servers"].items() if n != "deepdock" and key in r}
    verdict: dict[str, Any] = {"connections": first}
    if ours is None:
        return verdict
    verdict["deepdock_vs_ceiling"] = round(ours["rps"] / ceiling, 3)
    verdict["vs_ceiling_ok"] = ours["rps"] >= GOAL_VS_CEILING * ceiling
    if peers:
        best = max(peers, key=lambda n: peers[n]["rps"])
        verdict.update({"best_peer": best, "deepdock_vs_best_peer": round(ours["rps"] / peers[best]["rps"], 2),
                        "vs_peer_ok": ours["rps"] >= GOAL_VS_PEER * peers[best]["rps"]
                        and ours["p99_ms"] <= peers[best]["p99_ms"],
                        "p99_ms_deepdock": ours["p99_ms"], "p99_ms_best_peer": peers[best]["p99_ms"]})
    return verdict


def table(results: dict[str, Any], connections: list[int]) -> str:
    ceiling = results["ceiling_samples_per_s"]
    lines = ["| server | conns | req/s | p50 ms | p99 ms | errors | server CPU µs/req | rows/batch | of ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, result in results["servers"].items():
        if "error" in result:
            lines.append(f"| {name} | — | failed: {result['error'][:120]} | | | | | | |")
            continue
        for count in connections:
            p = result.get(f"c{count}")
            if p:
                lines.append(f"| {name} | {count} | {p['rps']:,.0f} | {p['p50_ms']} | {p['p99_ms']} | "
                             f"{p['non_2xx'] + p['socket_errors']} | {p['server_cpu_us_per_request']} | "
                             f"{p.get('rows_per_batch', '—')} | {p['rps'] / ceiling:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", default="32,8", help="comma-separated; the first is the judged one")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma-separated of " + ", ".join(SERVERS))
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the peer venv (serving_venv.sh makes it)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",") if c]
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SERVERS]
    if unknown or not connections:
        parser.error(f"unknown server {unknown}; choose from {SERVERS}" if unknown else "no --connections")
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset (apt-get install wrk util-linux)")
    venv: Path | None = args.venv
    results: dict[str, Any] = {"servers": {}, "skipped": {}}
    if any(s != "deepdock" for s in wanted) and not (args.venv / "bin" / "bentoml").exists():
        message = f"the peer venv {args.venv} is missing: make it with `bash {VENV_SCRIPT.relative_to(ROOT)}`"
        print(message, file=sys.stderr, flush=True)
        for name in wanted:
            if name != "deepdock":
                results["skipped"][name] = message
        wanted = [s for s in wanted if s == "deepdock"]
        venv = None
    results["versions"] = versions(venv)
    sample = np.round(np.random.default_rng(0).random(IN_FEATURES), 4).tolist()
    results["settings"] = {"max_batch_size": MAX_BATCH_SIZE, "max_wait_ms": MAX_WAIT_MS, "seconds": args.seconds,
                           "connections": connections, "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
                           "torch_threads": 1, "model": f"{IN_FEATURES}-{'-'.join([str(HIDDEN)] * HIDDEN_LAYERS)}"
                                                        f"-{OUT_FEATURES} MLP, TorchScript",
                           "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-serving-peers-") as tmp:
        root = Path(tmp)
        model_path = build_model(root / "bundle")
        results["in_process"] = measure_in_process(model_path, sample)
        reference = results["in_process"].pop("reference_output")
        print("in-process", results["in_process"], flush=True)
        env = {**os.environ, **ONE_THREAD}
        catalogue = servers(root / "bundle", model_path, sample, venv or args.venv, root / "bentoml-home")
        for name in wanted:
            try:
                results["servers"][name] = measure_server(catalogue[name], connections, args.seconds, env, root,
                                                          reference)
            except (RuntimeError, subprocess.SubprocessError, httpx.HTTPError) as exc:
                results["servers"][name] = {"error": str(exc)}
                print(f"  {name}: failed: {exc}", file=sys.stderr, flush=True)
        # Again after the servers, and the higher of the two is the ceiling (the stricter goal on a shared machine).
        results["in_process_after"] = measure_in_process(model_path, sample)
        results["in_process_after"].pop("reference_output")
        print("in-process after", results["in_process_after"], flush=True)
    results["ceiling_samples_per_s"] = max(results["in_process"]["ceiling_samples_per_s"],
                                           results["in_process_after"]["ceiling_samples_per_s"])
    results["settings"]["load_after"] = os.getloadavg()[0]
    results["goals"] = goals(results, connections[0])
    print(table(results, connections))
    verdict = results["goals"]
    if "vs_ceiling_ok" in verdict:
        print(f"goal ≥ {GOAL_VS_CEILING:.0%} of the in-process ceiling at c={connections[0]}: "
              f"{verdict['deepdock_vs_ceiling']:.1%} {'✔' if verdict['vs_ceiling_ok'] else '✘'}")
    if "vs_peer_ok" in verdict:
        print(f"goal ≥ {GOAL_VS_PEER}× the best peer ({verdict['best_peer']}) at an equal or lower p99: "
              f"{verdict['deepdock_vs_best_peer']}×, p99 {verdict['p99_ms_deepdock']} against "
              f"{verdict['p99_ms_best_peer']} ms {'✔' if verdict['vs_peer_ok'] else '✘'}")
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
