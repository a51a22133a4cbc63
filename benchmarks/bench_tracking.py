"""Tracking figures (issue 12), deepdock and MLflow side by side in one run on this machine.

    .venv/bin/python -m benchmarks.bench_tracking [--series 10] [--steps 10000] [--long 100000]
                                                  [--no-mlflow] [--sdk-overhead] [--repeats 5]
                                                  [--epochs 400] [--export]

- **Ingestion**: a real job (the offline python base image, a real server, the local Docker engine) logs
  ``series`` x ``steps`` points with ``sdk.log_metrics`` as fast as it can; the figure is points per second
  from its first call to the last point being queryable through the API, and the lag of that last point
  (its time as the job stamped it → the first API read that returns it). Every point is counted back.
- **Reads**: one ``long``-point series read whole through ``GET /jobs/J/metrics/NAME`` (and downsampled to
  1,000 points), median and p95 of ``repeats`` reads with the typed client.
- **MLflow** (baseline, same machine, same run): its tracking server (SQLite, one worker) in a separate
  venv (benchmarks/peers/), the same points through ``log_batch`` (1,000 per call, its maximum) and the
  same 100,000-point read through ``get_metric_history``.
- **Export** (``--export``): the demo's training registers digits-mlp; exporting it to TorchScript and to
  ONNX, each timed from submit to SUCCEEDED, with the parity check's max abs diff on 1,000 generated
  inputs and the example.
- **SDK overhead** (``--sdk-overhead``; builds the demo's PyTorch environment through the server when it
  is not built yet): one job trains the digits MLP for ``--epochs`` epochs, every other epoch calling
  ``log_metrics`` at each step (loss and accuracy, computed either way), each epoch timed; the figure is
  the median epoch with the calls against the median epoch without (also: the median of each logging
  epoch against the plain epoch after it, and the same in the main thread's CPU time, which leaves out
  time the job was preempted). Once per ``--overhead-cpus`` value
  (default 1 and 2): the job's CPUs and torch threads. With 2 on a 2-core machine the job shares its
  cores with the platform's own work for its output (the engine's log pipeline, the server's ingest),
  which is what the extra percent measures; with 1 the job has a core to itself, as on a real node.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from benchmarks._server import BenchServer, percentile
from deepdock.client import Client
from deepdock.envs.base import offline_image_name
from deepdock.settings import Settings
from deepdock.specs.job import JobSpec, load_job_spec

LOGGER = """
import os, time
from deepdock import sdk
series, steps = int(os.environ["SERIES"]), int(os.environ["STEPS"])
names = [f"m{i}" for i in range(series)]
print("first", repr(time.time()), flush=True)
for step in range(steps):
    sdk.log_metrics(step, **{name: step * 0.001 + i for i, name in enumerate(names)})
print("last", repr(time.time()), flush=True)
"""
OVERHEAD = """
import json, os, statistics, time
import torch
from deepdock import sdk
torch.manual_seed(0)
torch.set_num_threads(max(1, int(float(os.environ.get("DEEPDOCK_CPUS", "1")))))
if os.environ.get("BENCH_DATA") == "random":  # bench_sdk_call: a venv without scikit-learn, digits' shape
    generator = torch.Generator().manual_seed(1)
    x, y = torch.rand(1797, 64, generator=generator), torch.randint(0, 10, (1797,), generator=generator)
else:
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
# what a logging epoch calls each step (bench_sdk_call compares the SDK with an empty call and none)
call = {"sdk": sdk.log_metrics, "noop": lambda step, **kw: None, "none": None}[os.environ.get("BENCH_CALL", "sdk")]
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10))
opt, loss_fn = torch.optim.Adam(model.parameters(), lr=3e-3), torch.nn.CrossEntropyLoss()
times = {True: [], False: []}
cpu = {True: [], False: []}
step = 0
for epoch in range(int(os.environ["EPOCHS"])):
    logging = epoch % 2 == 0
    started, started_cpu = time.perf_counter(), time.thread_time()
    order = torch.randperm(len(x))
    for i in range(0, len(order), 64):
        idx = order[i:i + 64]
        opt.zero_grad()
        logits = model(x[idx])
        loss = loss_fn(logits, y[idx])
        loss.backward()
        opt.step()
        step += 1
        values = {"loss": loss.item(), "train_acc": (logits.argmax(dim=1) == y[idx]).float().mean().item()}
        if logging and call is not None:
            call(step, **values)
    times[logging].append(time.perf_counter() - started)
    cpu[logging].append(time.thread_time() - started_cpu)
sdk.flush()
def paired(series):
    # each logging epoch against the plain epoch right after it: drift slower than two epochs cancels
    return statistics.median(a / b - 1 for a, b in zip(series[True][2:], series[False][2:]))
with_sdk, without = statistics.median(times[True][2:]), statistics.median(times[False][2:])
print("RESULT " + json.dumps({"epochs_each": len(times[True]), "steps_per_epoch": -(-len(x) // 64),
      "epoch_ms_with_sdk": round(with_sdk * 1000, 3), "epoch_ms_without_sdk": round(without * 1000, 3),
      "overhead_pct": round((with_sdk - without) / without * 100, 2),
      "paired_overhead_pct": round(paired(times) * 100, 2),
      "cpu_overhead_pct": round(paired(cpu) * 100, 2)}), flush=True)
"""
POLL_S = 0.02
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _wait(client: Client, job_id: str, timeout_s: float = 900) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.status(job_id).status
        if status in TERMINAL:
            return str(status)
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not finish in {timeout_s}s")


def _logger_job(client: Client, code: Path, image: str, series: int, steps: int, name: str) -> str:
    spec = JobSpec.model_validate({"name": name, "image": image, "command": ["python", "main.py"], "code": str(code),
                                   "env": {"SERIES": str(series), "STEPS": str(steps)},
                                   "resources": {"cpus": 1, "memory": "256m"}})
    return client.run(spec).id


def measure_ingest(client: Client, code: Path, image: str, series: int, steps: int) -> dict[str, Any]:
    job_id = _logger_job(client, code, image, series, steps, "bench-ingest")
    last_name, last_step = f"m{series - 1}", steps - 1
    seen_at = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            tail = client.series(job_id, last_name, after_step=last_step - 1)
        except Exception:  # noqa: BLE001 - the series does not exist yet
            tail = None
        if tail is not None and tail.steps and tail.steps[-1] == last_step:
            seen_at = time.time()
            break
        time.sleep(POLL_S)
    assert seen_at is not None, "the last point never arrived"
    status = _wait(client, job_id)
    log = b"".join(client.logs(job_id)).decode()
    first = float(log.split("first ")[1].split()[0])
    last = float(log.split("last ")[1].split()[0])
    counted = sum(client.series(job_id, f"m{i}").total for i in range(series))
    last_point = client.series(job_id, last_name, after_step=last_step - 1)
    points = series * steps
    return {"job": job_id, "status": status, "points": points, "points_stored": counted,
            "job_logging_s": round(last - first, 3), "first_to_queryable_s": round(seen_at - first, 3),
            "points_per_s": round(points / (seen_at - first)), "job_side_points_per_s": round(points / (last - first)),
            "last_point_lag_s": round(seen_at - last_point.times[-1], 3)}


def measure_reads(client: Client, code: Path, image: str, long_steps: int, repeats: int) -> dict[str, Any]:
    job_id = _logger_job(client, code, image, 1, long_steps, "bench-long")
    _wait(client, job_id)
    full, small = [], []
    total = 0
    for _ in range(repeats):
        started = time.perf_counter()
        total = len(client.series(job_id, "m0").steps)
        full.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        client.series(job_id, "m0", max_points=1000)
        small.append((time.perf_counter() - started) * 1000)
    return {"points_returned": total, "read_ms_median": round(statistics.median(full), 1),
            "read_ms_p95": round(percentile(full, 95), 1), "read_1000_ms_median": round(statistics.median(small), 1)}


def measure_sdk_overhead(client: Client, tmp: Path, epochs: int, cpus: int) -> dict[str, Any]:
    """The digits training loop in one job, its epochs alternating with and without the per-step
    ``log_metrics`` calls (the arguments are computed either way), each epoch timed: the same process,
    data and warm caches on both sides, so machine drift (which made whole-job A/B runs vary by ±20%
    here) cancels out. The SDK writes to the container's real output and the server ingests it."""
    demo_dir = Path(str(resources.files("deepdock.demo")))
    code = tmp / "overhead"
    code.mkdir(parents=True)
    (code / "overhead.py").write_text(OVERHEAD)
    base = load_job_spec(demo_dir / "job.yaml")
    spec = base.model_copy(update={"name": "bench-sdk-overhead", "command": ["python", "overhead.py"], "code": str(code),
                                   "env": {**base.env, "EPOCHS": str(epochs), "DEEPDOCK_CPUS": str(cpus)},
                                   "resources": base.resources.model_copy(update={"cpus": float(cpus)})})
    job_id = client.run(spec).id
    assert _wait(client, job_id, timeout_s=1800) == "SUCCEEDED", client.job(job_id).status_reason
    log = b"".join(client.logs(job_id)).decode()
    result = json.loads(log.split("RESULT ")[1].splitlines()[0])
    result["points_stored"] = client.series(job_id, "loss").total
    result["cpus"] = cpus
    return result


def measure_export(client: Client, generated: int) -> dict[str, Any]:
    """The demo's training job registers digits-mlp; each export job is timed from submit to SUCCEEDED
    (the image is present: the training just ran in it)."""
    demo_dir = Path(str(resources.files("deepdock.demo")))
    spec = load_job_spec(demo_dir / "job.yaml").model_copy(update={"code": str(demo_dir)})
    job_id = client.run(spec).id
    assert _wait(client, job_id, timeout_s=1800) == "SUCCEEDED", client.job(job_id).status_reason
    version = next(v for v in client.model("digits-mlp").versions if v.job == job_id)
    out: dict[str, Any] = {"version": version.version, "generated_inputs": generated}
    for fmt in ("torchscript", "onnx"):
        started = time.perf_counter()
        export = client.export_model(f"digits-mlp:{version.version}", fmt, generated=generated)
        status = _wait(client, export.job)
        elapsed = time.perf_counter() - started
        report = client.model_version(f"digits-mlp:{version.version}").formats.get(fmt, {}).get("report", {})
        out[fmt] = {"status": status, "submit_to_done_s": round(elapsed, 2), "method": report.get("method"),
                    "max_abs_diff": report.get("max_abs_diff"), "atol": report.get("atol"),
                    "inputs_checked": report.get("inputs_checked"), "export_s": report.get("export_s"),
                    "in_container_s": report.get("duration_s")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--long", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--sdk-overhead", action="store_true")
    parser.add_argument("--overhead-cpus", type=int, nargs="+", default=[1, 2],
                        help="CPUs (and torch threads) of the overhead job, one run each")
    parser.add_argument("--export", action="store_true", help="train the demo model, export it both ways, timed")
    parser.add_argument("--generated", type=int, default=1000, help="generated inputs of the export parity check")
    parser.add_argument("--epochs", type=int, default=400, help="digits epochs of the overhead job, half logging")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="deepdock-bench-tracking-"))
    image = offline_image_name("3.11")
    code = tmp / "logger"
    code.mkdir()
    (code / "main.py").write_text(LOGGER)
    results: dict[str, Any] = {}
    try:
        with BenchServer(tmp / "home") as server:
            client = Client(server.url, server.token, settings=Settings(home=tmp / "home"))
            results["deepdock_ingest"] = measure_ingest(client, code, image, args.series, args.steps)
            results["deepdock_read"] = measure_reads(client, code, image, args.long, args.repeats)
            if args.export:
                results["export"] = measure_export(client, args.generated)
            if args.sdk_overhead:
                results["sdk_overhead"] = [measure_sdk_overhead(client, tmp / f"run-{i}-cpus-{n}", args.epochs, n)
                                           for i, n in enumerate(args.overhead_cpus)]
            client.close()
        if not args.no_mlflow:
            from benchmarks.peers.mlflow_tracking import measure_mlflow

            results["mlflow"] = measure_mlflow(series=args.series, steps=args.steps, long_steps=args.long,
                                               repeats=args.repeats)
            ours, theirs = results["deepdock_ingest"], results["mlflow"]
            results["ratios"] = {
                "ingest_points_per_s": round(ours["points_per_s"] / theirs["ingest_points_per_s"], 1),
                "read_100k_median": round(theirs["read_100k_ms_median"] / results["deepdock_read"]["read_ms_median"], 1),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
