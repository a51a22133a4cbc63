"""Measurement half of the MLflow peer benchmark: runs with the MLflow venv's python, never deepdock's.

    $MLFLOW_VENV/bin/python benchmarks/peers/_mlflow_driver.py TRACKING_URI SERIES STEPS BATCH LONG_STEPS REPEATS

It talks to an already started ``mlflow server`` through ``MlflowClient`` (the public client API, REST
underneath), and prints exactly one JSON line on stdout; progress goes to stderr. Started by
``mlflow_tracking.measure_mlflow``, which owns the server's lifetime. Stdlib + mlflow only.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.store.tracking import GET_METRIC_HISTORY_MAX_RESULTS
from mlflow.tracking import MlflowClient


def log(msg: str) -> None:
    print(f"[mlflow-driver] {msg}", file=sys.stderr, flush=True)


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (with 5 samples this is the slowest one)."""
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(0.95 * (len(ordered) - 1))))
    return ordered[k]


def build_points(keys: list[str], steps: int, base_ms: int) -> list[Metric]:
    """Step-major, as a training loop logs: at each step every series gets one point."""
    return [Metric(key, float(step) * 0.001 + i, base_ms + step, step) for step in range(steps) for i, key in enumerate(keys)]


def ingest(client: MlflowClient, run_id: str, points: list[Metric], batch: int) -> tuple[float, int]:
    """All log_batch calls, back to back; returns (seconds, number of calls)."""
    calls = 0
    t0 = time.perf_counter()
    for start in range(0, len(points), batch):
        client.log_batch(run_id, metrics=points[start:start + batch])
        calls += 1
    return time.perf_counter() - t0, calls


def counting_reads(client: MlflowClient) -> list[int]:
    """Count the REST requests MlflowClient.get_metric_history makes (it pages internally).

    Wraps the client's store object (a private attribute) only to count calls; the work done is the same.
    """
    counter = [0]
    store = client._tracking_client.store
    original = store.get_metric_history

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    store.get_metric_history = wrapped
    return counter


def timed_reads(client: MlflowClient, counter: list[int], run_id: str, key: str, repeats: int) -> tuple[list[float], int, int]:
    """`repeats` full reads of one series; returns (ms per read, points returned, requests per read)."""
    times: list[float] = []
    points = requests = 0
    for _ in range(repeats):
        before = counter[0]
        t0 = time.perf_counter()
        history = client.get_metric_history(run_id, key)
        times.append((time.perf_counter() - t0) * 1000)
        points, requests = len(history), counter[0] - before
    return times, points, requests


def main(argv: list[str]) -> dict[str, Any]:
    uri, series, steps, batch, long_steps, repeats = argv[0], *map(int, argv[1:6])
    client = MlflowClient(tracking_uri=uri)
    counter = counting_reads(client)
    experiment_id = client.create_experiment(f"deepdock-bench-{time.time_ns()}")
    base_ms = int(time.time() * 1000)

    # 1. series x steps points into one run.
    keys = [f"m{i}" for i in range(series)]
    run_id = client.create_run(experiment_id, run_name="grid").info.run_id
    points = build_points(keys, steps, base_ms)
    log(f"ingesting {len(points)} points ({series} series x {steps} steps) in batches of {batch}")
    ingest_s, calls = ingest(client, run_id, points, batch)
    t_last = time.perf_counter()
    deadline = t_last + 60
    while True:  # the last point logged is the last step of the last series
        history = client.get_metric_history(run_id, keys[-1])
        if history and max(m.step for m in history) == steps - 1:
            break
        if time.perf_counter() > deadline:
            raise RuntimeError("last point not visible after 60 s")
        time.sleep(0.01)
    last_visible_s = time.perf_counter() - t_last
    log(f"ingested in {ingest_s:.1f} s ({calls} log_batch calls); last point visible after {last_visible_s * 1000:.0f} ms")

    read_10k, n_10k, req_10k = timed_reads(client, counter, run_id, keys[0], repeats)
    log(f"read {keys[0]} ({n_10k} points): median {statistics.median(read_10k):.0f} ms")

    # 2. one long series in a second run.
    long_run = client.create_run(experiment_id, run_name="long").info.run_id
    long_points = build_points(["long"], long_steps, base_ms)
    log(f"ingesting one series of {long_steps} points")
    long_ingest_s, long_calls = ingest(client, long_run, long_points, batch)
    log(f"ingested in {long_ingest_s:.1f} s ({long_calls} log_batch calls)")
    read_100k, n_100k, req_100k = timed_reads(client, counter, long_run, "long", repeats)
    log(f"read long ({n_100k} points, {req_100k} requests): median {statistics.median(read_100k):.0f} ms")

    return {
        "mlflow_version": mlflow.__version__,
        "ingest_points": len(points),
        "ingest_s": round(ingest_s, 3),
        "ingest_points_per_s": round(len(points) / ingest_s, 1),
        "ingest_log_batch_calls": calls,
        "last_point_visible_s": round(last_visible_s, 4),
        "read_10k_ms_median": round(statistics.median(read_10k), 2),
        "read_10k_ms_p95": round(p95(read_10k), 2),
        "read_10k_points_returned": n_10k,
        "read_10k_requests": req_10k,
        "long_ingest_points": len(long_points),
        "long_ingest_s": round(long_ingest_s, 3),
        "long_ingest_points_per_s": round(len(long_points) / long_ingest_s, 1),
        "read_100k_ms_median": round(statistics.median(read_100k), 2),
        "read_100k_ms_p95": round(p95(read_100k), 2),
        "read_100k_ms_all": [round(t, 2) for t in read_100k],
        "read_100k_points_returned": n_100k,
        "read_100k_requests": req_100k,
        "read_page_size": GET_METRIC_HISTORY_MAX_RESULTS,
        "read_repeats": repeats,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
