"""Services end to end on a real server, its HAProxy gateway and this machine's Docker engine.

    .venv/bin/python -m benchmarks.bench_services [--json OUT] [--only ready,proxy,rollout,canary,autoscale]

Each figure against its baseline in the same run:

- **ready**: `serve` → every replica ready (1 replica, its serving image present: the first deployment
  builds it and is reported apart), three times, each after the last one is deleted; and the size of
  that ONNX serving image.
- **proxy**: the same v2 request, one client, keep-alive, sequentially: through the endpoint (HAProxy →
  replica) and straight to the replica's published port, 2,000 each in 4 alternating rounds; the added
  p50 (and p99) is the proxy's cost. Measured with batching's max wait at 0 and at its default 2 ms, once
  the gateway has made the replica a configured server (``CONSOLIDATE_AFTER_S`` after it was added).
- **rollout**: a steady load (4 clients, 10 ms apart) during a rolling update v1 → v2 and a rollback;
  failed requests counted.
- **canary**: the same load while a slow version (its p99 far above the SLO's 20 ms) is rolled out as a
  50 % canary; seconds from the apply until it is rolled back on its own, and the share of all requests
  that failed.
- **autoscale**: min 1, max 3, target concurrency 2 per replica; 8 clients without pause; seconds until 3
  replicas are ready; then no load, seconds until back to 1 (cooldown 20 s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import numpy as np
import orjson
from tests.integration.service_kit import FEATURES, Load, infer_body, register_onnx_version

from benchmarks._server import BenchServer, free_port, percentile, remove_containers
from deepdock.api.enums import RevisionStatus, ServiceStatus
from deepdock.api.models import ServiceDetail
from deepdock.client import Client
from deepdock.gateway.haproxy import CONSOLIDATE_AFTER_S
from deepdock.specs.service import ServiceSpec

LABEL = {"deepdock.bench": "services"}
PROXY_REQUESTS, PROXY_ROUNDS = 2000, 4
SLOW_LAYERS, SLOW_WIDTH = 24, 1024
SLO_P99_MS = 20.0


def onnx_mlp(path: Path, seed: int, layers: int = 1, width: int = 32) -> Path:
    """An MLP 64 → width (→ width, ``layers - 1`` times) → 10 as an ONNX file (onnx.helper, no torch)."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(seed)
    dims = [FEATURES] + [width] * layers + [10]
    nodes, inits, current = [], [], "input"
    for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
        inits += [numpy_helper.from_array(rng.normal(0, 0.05, (a, b)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        out = "output" if i == len(dims) - 2 else f"h{i}"
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [out if out == "output" else f"a{i}"])]
        if out != "output":
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        current = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def wait(c: Client, name: str, done: Callable[[ServiceDetail], bool], timeout_s: float = 600) -> ServiceDetail:
    deadline = time.monotonic() + timeout_s
    while True:
        s = c.service(name)
        if done(s):
            return s
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: {s.status} {s.status_reason}")
        time.sleep(0.1)


def serving(revision: int | None = None, replicas: int = 1) -> Callable[[ServiceDetail], bool]:
    return lambda s: (s.status == ServiceStatus.READY and s.stable_revision == s.target_revision
                      and (revision is None or s.stable_revision == revision)
                      and s.ready_replicas == replicas == len(s.replicas))


def delete(c: Client, name: str) -> None:
    jobs = [r.job for r in c.service(name).replicas]
    c.delete_service(name)
    for job in jobs:
        while c.job(job).status not in ("STOPPED", "FAILED", "SUCCEEDED"):
            time.sleep(0.2)


def spec(name: str, model: str, **extra: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": name, "model": model, "runtime": "onnx", "replicas": 1,
                                       "resources": {"cpus": 0.5, "memory": "512m"}, **extra})


def bench_ready(c: Client) -> dict[str, Any]:
    started = time.monotonic()
    c.apply_service(spec("ready", "digits-mlp:1"))
    s = wait(c, "ready", serving())
    first = time.monotonic() - started
    image = s.revisions[-1].image
    engine = docker.from_env()
    size_mb = engine.images.get(image).attrs["Size"] / 1e6
    engine.close()
    delete(c, "ready")
    times = []
    for _ in range(3):
        started = time.monotonic()
        c.apply_service(spec("ready", "digits-mlp:1"))
        wait(c, "ready", serving())
        times.append(time.monotonic() - started)
        delete(c, "ready")
    return {"first_deploy_s": first, "image_present_s": times, "median_s": sorted(times)[1], "onnx_image": image,
            "onnx_image_mb": size_mb}


def _sequential(url: str, headers: dict[str, str], content: bytes, n: int) -> list[float]:
    out = []
    with httpx.Client(headers=headers, timeout=10) as http:
        for _ in range(n):
            sent = time.perf_counter()
            r = http.post(url, content=content)
            out.append(time.perf_counter() - sent)
            assert r.status_code == 200, r.text
    return out


def bench_proxy(c: Client, x: np.ndarray) -> dict[str, Any]:
    """Once with batching's max wait at 0 (the hop's own cost) and once at the default 2 ms, where each
    request idles the whole chain for 2 ms and every process wakes again (costly in this VM)."""
    out: dict[str, Any] = {}
    for max_wait_ms in (0.0, 2.0):
        c.apply_service(spec("proxy", "digits-mlp:1", batching={"max_batch_size": 32, "max_wait_ms": max_wait_ms}))
        s = wait(c, "proxy", serving())
        time.sleep(CONSOLIDATE_AFTER_S + 2)  # the replica, added at runtime, becomes a configured server
        replica = s.replicas[0]
        content = orjson.dumps(infer_body(x))
        headers = {"Authorization": f"Bearer {c.token}", "Content-Type": "application/json"}
        via = f"{s.endpoint}/v2/models/digits-mlp/infer"
        direct = f"http://{replica.address}:{replica.port}/v2/models/digits-mlp/infer"
        _sequential(via, headers, content, 200), _sequential(direct, headers, content, 200)  # warm-up
        through, straight = [], []
        for _ in range(PROXY_ROUNDS):
            through += _sequential(via, headers, content, PROXY_REQUESTS // PROXY_ROUNDS)
            straight += _sequential(direct, headers, content, PROXY_REQUESTS // PROXY_ROUNDS)
        delete(c, "proxy")
        us = 1e6
        out[f"max_wait_{max_wait_ms:g}ms"] = {
            "endpoint_p50_us": percentile(through, 50) * us, "direct_p50_us": percentile(straight, 50) * us,
            "endpoint_p99_us": percentile(through, 99) * us, "direct_p99_us": percentile(straight, 99) * us,
            "added_p50_us": (percentile(through, 50) - percentile(straight, 50)) * us,
            "added_p99_us": (percentile(through, 99) - percentile(straight, 99)) * us, "requests_each": len(through)}
    return out


def bench_rollout(c: Client, x: np.ndarray, v1: int, v2: int) -> dict[str, Any]:
    c.apply_service(spec("roll", f"digits-mlp:{v1}", replicas=2))
    s = wait(c, "roll", serving(replicas=2))
    url = f"{s.endpoint}/v2/models/digits-mlp/infer"
    with Load(url, c.token, infer_body(x), clients=4) as load:
        time.sleep(2)
        started = time.monotonic()
        update = c.update_service("roll", model=f"digits-mlp:{v2}")
        wait(c, "roll", serving(update.target_revision, 2))
        update_s = time.monotonic() - started
        time.sleep(2)
        started = time.monotonic()
        back = c.rollback_service("roll")
        wait(c, "roll", serving(back.target_revision, 2))
        rollback_s = time.monotonic() - started
        time.sleep(2)
    delete(c, "roll")
    return {"requests": load.total, "failed": len(load.failed), "failures": load.failed[:5],
            "update_s": update_s, "rollback_s": rollback_s}


def bench_canary(c: Client, x: np.ndarray, good: int, slow: int) -> dict[str, Any]:
    base = spec("canary", f"digits-mlp:{good}", replicas=2)
    c.apply_service(base)
    s = wait(c, "canary", serving(replicas=2))
    url = f"{s.endpoint}/v2/models/digits-mlp/infer"
    with Load(url, c.token, infer_body(x), clients=4) as load:
        time.sleep(2)
        started = time.monotonic()
        c.apply_service(ServiceSpec.model_validate({
            **base.model_dump(mode="json"), "model": f"digits-mlp:{slow}",
            "rollout": {"canary": {"steps": [50], "interval": 60}, "slo": {"max_p99_ms": SLO_P99_MS, "min_requests": 20}}}))
        s = wait(c, "canary", lambda s: s.revisions[-1].status == RevisionStatus.FAILED)
        rolled_back_s = time.monotonic() - started
        wait(c, "canary", serving(s.stable_revision, 2))
        time.sleep(2)
    reason = s.revisions[-1].reason
    p99_ms = percentile(load.latencies_s, 99) * 1000
    delete(c, "canary")
    return {"rolled_back_after_s": rolled_back_s, "reason": reason, "requests": load.total, "failed": len(load.failed),
            "failed_share": len(load.failed) / max(1, load.total), "client_p99_ms_whole_run": p99_ms}


def bench_autoscale(c: Client, x: np.ndarray) -> dict[str, Any]:
    c.apply_service(spec("auto", "digits-mlp:1",
                         autoscaling={"min": 1, "max": 3, "target_concurrency": 2, "cooldown": 20, "window": 5}))
    s = wait(c, "auto", serving(replicas=1))
    url = f"{s.endpoint}/v2/models/digits-mlp/infer"
    with Load(url, c.token, infer_body(x), clients=8, interval_s=0) as load:
        started = time.monotonic()
        wait(c, "auto", lambda s: s.ready_replicas == 3, timeout_s=120)
        up_s = time.monotonic() - started
    started = time.monotonic()
    s = wait(c, "auto", lambda s: s.desired_replicas == 1 and len(s.replicas) == 1, timeout_s=180)
    down_s = time.monotonic() - started
    events = [e.message for e in s.events if e.kind == "scaled"]
    delete(c, "auto")
    return {"up_1_to_3_s": up_s, "down_3_to_1_s": down_s, "cooldown_s": 20, "requests": load.total,
            "failed": len(load.failed), "events": events}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="ready,proxy,rollout,canary,autoscale")
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    x = np.random.default_rng(3).normal(size=(1, FEATURES)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="deepdock-bench-services-") as tmp:
        home = Path(tmp) / "home"
        files = Path(tmp) / "models"
        server = BenchServer(home, DEEPDOCK_GATEWAY_PORT=str(free_port()), DEEPDOCK_GATEWAY_METRICS_PORT="0",
                             DEEPDOCK_ROLLOUT_INTERVAL_S="0.5",
                             DEEPDOCK_CONTAINER_LABELS=json.dumps(LABEL))
        try:
            with server, Client(server.url, server.token) as c:
                v1 = register_onnx_version(home, onnx_mlp(files / "v1.onnx", 1))
                v2 = register_onnx_version(home, onnx_mlp(files / "v2.onnx", 2))
                slow = register_onnx_version(home, onnx_mlp(files / "slow.onnx", 3, SLOW_LAYERS, SLOW_WIDTH))
                steps: dict[str, Callable[[], dict[str, Any]]] = {
                    "ready": lambda: bench_ready(c), "proxy": lambda: bench_proxy(c, x),
                    "rollout": lambda: bench_rollout(c, x, v1, v2), "canary": lambda: bench_canary(c, x, v1, slow),
                    "autoscale": lambda: bench_autoscale(c, x)}
                for name, step in steps.items():
                    if name in only:
                        results[name] = step()
                        print(name, json.dumps(results[name], default=float), flush=True)
        finally:
            remove_containers(LABEL)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
