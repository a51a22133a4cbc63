"""Submit → RUNNING latency with the image present, 50 jobs, against `docker run` in the same run.

    .venv/bin/python -m benchmarks.bench_submit [--jobs 50] [--image python:3.11-slim-bookworm]

deepdock's latency is measured on the server's clock: the RUNNING event's time minus the submit time
(validation, DB write, scheduling cycle, container create + code copy + start, DB update). The baseline
is the docker SDK creating and starting the same container (same limits) directly, timed by the caller,
each removed before the next (as deepdock's one-at-a-time jobs are stopped before the next submit).
Two shapes: one job at a time, and a burst of as many jobs as the node fits at once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import docker

from benchmarks._server import BenchServer, percentile
from deepdock.client import Client
from deepdock.settings import Settings
from deepdock.specs.job import JobSpec

BENCH_LABEL = "deepdock.bench"
MEMORY = "64m"
# Half a core, like a small real job. Why not less: Docker starts the container's init (runc) inside its
# CPU quota, so at 0.02 CPUs the start alone takes ~1.2 s on this engine instead of ~0.27 s.
DEFAULT_CPUS = 0.5


def docker_run_baseline(client: docker.DockerClient, image: str, n: int, label: str, cpus: float) -> list[float]:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        container = client.containers.run(image, ["sleep", "120"], detach=True, labels={BENCH_LABEL: label},
                                          network_mode="none", nano_cpus=int(cpus * 1e9), mem_limit=MEMORY,
                                          memswap_limit=MEMORY, pids_limit=64)
        lat.append(time.perf_counter() - t0)
        container.remove(force=True)
    return lat


def deepdock_latencies(c: Client, image: str, n: int, burst: bool, cpus: float) -> list[float]:
    """Submit → RUNNING on the server's clock. One at a time: each job is stopped (and gone) before the
    next is submitted, so every submit finds an idle node. Burst: all at once (the caller sizes ``n``
    so that all fit)."""
    spec = JobSpec.model_validate({"name": "bench", "image": image, "command": ["sleep", "120"],
                                   "resources": {"cpus": cpus, "memory": MEMORY, "pids": 64}})
    out = []
    batches = [[c.submit(spec).id for _ in range(n)]] if burst else ([c.submit(spec).id] for _ in range(n))
    for ids in batches:
        for job_id in ids:
            _wait_for(c, job_id, {"RUNNING"})
        for job_id in ids:
            d = c.job(job_id)
            running = next(e.at for e in d.events if e.to_status == "RUNNING")
            out.append(running - d.submitted_at)
            c.stop(job_id)
        for job_id in ids:
            _wait_for(c, job_id, {"STOPPED"})
    return out


def jobs_that_fit(c: Client, cpus: float) -> int:
    return sum(int((n.cpus - n.allocated_cpus) // cpus) for n in c.nodes() if n.status == "ready")


def _wait_for(c: Client, job_id: str, statuses: set[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = c.status(job_id).status
        if status in statuses:
            return
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            raise RuntimeError(f"job {job_id} {status}: {c.job(job_id).status_reason}")
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} not {statuses} after {timeout_s}s")


def summary(lat: list[float]) -> dict[str, float]:
    return {"p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99), "mean_s": sum(lat) / len(lat)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--image", default="python:3.11-slim-bookworm")
    ap.add_argument("--cpus", type=float, default=DEFAULT_CPUS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    run_label = uuid.uuid4().hex[:8]
    engine = docker.from_env()
    engine.images.get(args.image)  # the image must be present: that is the scenario measured
    try:
        baseline = docker_run_baseline(engine, args.image, args.jobs, run_label, args.cpus)
        for c in engine.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={run_label}"}):
            c.remove(force=True)
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            with BenchServer(home, DEEPDOCK_CONTAINER_LABELS=json.dumps({BENCH_LABEL: run_label}),
                             DEEPDOCK_STOP_GRACE_S="1") as srv, Client(srv.url, srv.token, settings=Settings(home=home)) as c:
                sequential = deepdock_latencies(c, args.image, args.jobs, burst=False, cpus=args.cpus)
                burst_jobs = min(args.jobs, jobs_that_fit(c, args.cpus))
                burst = deepdock_latencies(c, args.image, burst_jobs, burst=True, cpus=args.cpus)
    finally:
        for c in engine.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={run_label}"}):
            c.remove(force=True)
    result = {
        "jobs": args.jobs,
        "cpus": args.cpus,
        "docker_run": summary(baseline),
        "deepdock_one_at_a_time": summary(sequential),
        "deepdock_burst": {"jobs": burst_jobs, **summary(burst)},
        "p50_ratio_vs_docker_run": percentile(sequential, 50) / percentile(baseline, 50),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
