"""The dashboard's figures (issue 15) in headless Chromium against a real server and Docker engine.

    .venv/bin/python -m benchmarks.bench_ui [--jobs 10000] [--points 100000] [--repeats 5] [--json OUT]
                                            [--parts jobs,chart,nodes,live]

- **Jobs page, 10,000 jobs**: from navigation start until the jobs page is interactive (its first page of
  rows rendered and its handlers bound: ``#app[data-ready=jobs]``), median of ``--repeats`` fresh loads;
  baseline: the same page filtered to a project of 100 jobs, same server, same run. Goal ≤ 1 s.
- **A 100,000-point series**: from navigation start until the job page's loss chart is drawn (its canvas
  carries ``data-points``); baseline: a 1,000-point series. Goal ≤ 1 s.
- **The nodes page with 50 nodes** of 8 GPUs each (400 squares in the GPU map, each with its last reading,
  and a GPU chart per node from an hour of readings at the usage step's 10 s: 144,000 samples): from
  navigation start until every chart is drawn; baseline: the one real node. The 50 are rows in the
  database whose engines (closed ports on loopback) do not answer, so they show as unreachable and no job
  holds their GPUs. Goal (issue 15): interactive with 50 nodes.
- **A metric on an open job page**: a job logs ``loss`` every 0.2 s through the SDK; the page records when
  each new step appears; latency = that moment − the time the SDK stamped on the point. Goal ≤ 2 s.

The jobs are written straight into the server's database (terminal, so the scheduler leaves them); the
series are logged by real jobs (the SDK in the offline Python image), as bench_tracking's are.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from benchmarks._server import BenchServer, free_port, remove_containers
from benchmarks.bench_tracking import LOGGER, _logger_job, _wait
from deepdock.api.enums import JobStatus
from deepdock.client import Client
from deepdock.envs.base import offline_image_name
from deepdock.server.db.models import GpuSample, Job, Membership, Node, Project, User
from deepdock.server.db.session import Database
from deepdock.settings import Settings
from deepdock.specs.job import JobSpec

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# Ends when asked to (the SDK's SIGTERM handler): a stopped job exits at once instead of at the grace.
LIVE = ("import time\nfrom deepdock import sdk\nfor step in range(300):\n"
        "    sdk.log_metrics(step, loss=1.0 / (step + 1))\n    if sdk.should_stop():\n        break\n    time.sleep(0.2)\n")
LIVE_WATCH_S = 12.0
LABEL = {"deepdock.bench": "ui"}
TERMINAL = [JobStatus.SUCCEEDED] * 6 + [JobStatus.FAILED, JobStatus.STOPPED]


def fill_jobs(home: Path, big: int, small: int) -> None:
    db = Database(Settings(home=home).db_url)
    rng = random.Random(0)
    now = time.time()
    with db.session() as session:
        admin = session.query(User).filter(User.name == "admin").one()
        for name, count in (("big", big), ("small", small)):
            project = Project(name=name)
            session.add(project)
            session.flush()
            session.add(Membership(user_id=admin.id, project_id=project.id))
            for i in range(count):
                submitted = now - rng.uniform(60, 30 * 86400)
                session.add(Job(id=uuid.uuid4().hex[:12], name=f"{name}-{i}", project_id=project.id, user_id=admin.id,
                                spec={}, status=rng.choice(TERMINAL), cpus=1, memory=1024**3, gpus=0,
                                submitted_at=submitted, created_at=submitted, updated_at=submitted,
                                started_at=submitted + 5, finished_at=submitted + 600))
        session.commit()
    db.dispose()


def fill_nodes(home: Path, count: int, gpu_history_s: float = 3600.0, interval_s: float = 10.0) -> int:
    """``count`` nodes of 8 GPUs whose engines are closed loopback ports, each GPU with a reading every
    ``interval_s`` over the last ``gpu_history_s``; returns how many readings."""
    db = Database(Settings(home=home).db_url)
    now = time.time()
    rounds = int(gpu_history_s / interval_s)
    rng = random.Random(0)
    with db.session() as session:
        for i in range(count):
            session.add(Node(name=f"gpu-{i:02d}", engine_url=f"tcp://127.0.0.1:{free_port()}", cpus=64,
                             memory=512 * 1024**3,
                             gpus=[{"index": g, "uuid": f"GPU-{i}-{g}", "model": "H100", "memory": 80 * 1024**3}
                                   for g in range(8)], labels={}, engine_version="24.0", status="ready",
                             last_seen_at=now))
        readings = [{"node_name": f"gpu-{i:02d}", "gpu_index": g, "uuid": f"GPU-{i}-{g}", "at": now - r * interval_s,
                     "utilization_percent": float(rng.randint(0, 100)), "memory_used": rng.randint(0, 80) * 1024**3,
                     "memory_total": 80 * 1024**3, "temperature_c": 60.0, "power_w": 400.0}
                    for i in range(count) for g in range(8) for r in range(rounds)]
        session.execute(insert(GpuSample), readings)
        session.commit()
    db.dispose()
    return len(readings)


def loaded_ms(context: Any, url: str, ready: str, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats + 1):  # the first load warms the server's and the browser's caches
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector(ready, timeout=30_000)
        times.append(page.evaluate("performance.now()"))
        page.close()
    return {"median_ms": statistics.median(times[1:]), "max_ms": max(times[1:])}


def live_latency(context: Any, client: Client, server_url: str, job_id: str) -> dict[str, float]:
    page = context.new_page()
    page.goto(f"{server_url}/ui/#/jobs/{job_id}")
    page.wait_for_selector("canvas[data-metric=loss]", timeout=60_000)
    page.evaluate("""() => { window.seenAt = {}; const c = () => document.querySelector('canvas[data-metric=loss]');
        window.watch = setInterval(() => { const s = c() && c().dataset.lastStep;
          if (s !== undefined && !(s in window.seenAt)) window.seenAt[s] = Date.now() / 1000; }, 20); }""")
    page.wait_for_timeout(LIVE_WATCH_S * 1000)
    seen: dict[str, float] = page.evaluate("window.seenAt")
    page.close()
    series = client.series(job_id, "loss")
    logged = dict(zip((str(s) for s in series.steps), series.times, strict=True))
    lags = sorted(at - logged[step] for step, at in seen.items() if step in logged)[1:]  # the first was already there
    return {"points_seen": len(lags), "median_s": statistics.median(lags), "max_s": max(lags)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--parts", default="jobs,chart,nodes,live", help="which figures, comma-separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="deepdock-bench-ui-"))
    code = tmp / "logger"
    code.mkdir()
    (code / "main.py").write_text(LOGGER)
    image = offline_image_name("3.11")
    results: dict[str, Any] = {}
    try:
        with BenchServer(tmp / "home", DEEPDOCK_TRACKING_INTERVAL_S="0.2",
                         DEEPDOCK_CONTAINER_LABELS=json.dumps(LABEL)) as server:
            client = Client(server.url, server.token, settings=Settings(home=tmp / "home"))
            if "jobs" in parts:
                fill_jobs(tmp / "home", args.jobs - 100, 100)
            if "chart" in parts:
                long_job = _logger_job(client, code, image, 1, args.points, "bench-ui-long")
                short_job = _logger_job(client, code, image, 1, 1000, "bench-ui-short")
                for job in (long_job, short_job):
                    _wait(client, job)
                assert client.series(long_job, "m0").total == args.points
            live = None
            if "live" in parts:
                live = client.run(JobSpec.model_validate({"name": "bench-ui-live", "image": image,
                                                          "command": ["python", "-c", LIVE],
                                                          "resources": {"cpus": 0.5, "memory": "256m"}}))
            with sync_playwright() as p:
                context = p.chromium.launch_persistent_context(
                    str(tmp / "profile"), executable_path=shutil.which("chromium"), headless=True, args=FLAGS,
                    viewport={"width": 1360, "height": 900})
                context.add_init_script(f"sessionStorage.setItem('deepdock-token', {json.dumps(server.token)})")
                ui = f"{server.url}/ui/"
                if "jobs" in parts:
                    results["jobs_page"] = {
                        f"{args.jobs} jobs": loaded_ms(context, f"{ui}#/jobs?project=big", "#app[data-ready=jobs]",
                                                       args.repeats),
                        "100 jobs (baseline)": loaded_ms(context, f"{ui}#/jobs?project=small", "#app[data-ready=jobs]",
                                                         args.repeats)}
                    print("jobs_page", json.dumps(results["jobs_page"]), flush=True)
                if "chart" in parts:
                    chart = "canvas[data-metric=m0][data-points]"
                    results["chart"] = {
                        f"{args.points} points": loaded_ms(context, f"{ui}#/jobs/{long_job}", chart, args.repeats),
                        "1000 points (baseline)": loaded_ms(context, f"{ui}#/jobs/{short_job}", chart, args.repeats)}
                    print("chart", json.dumps(results["chart"]), flush=True)
                if "nodes" in parts:
                    nodes = "[data-node=local]"
                    results["nodes_page"] = {"1 node (baseline)": loaded_ms(context, f"{ui}#/nodes", nodes,
                                                                            args.repeats)}
                    readings = fill_nodes(tmp / "home", 50)
                    results["nodes_page"][f"51 nodes, 400 GPUs, {readings} GPU readings"] = loaded_ms(
                        context, f"{ui}#/nodes", "[data-node=gpu-49] canvas[data-gpu-usage][data-points]",
                        args.repeats)
                    print("nodes_page", json.dumps(results["nodes_page"]), flush=True)
                if live is not None:
                    results["live"] = live_latency(context, client, server.url, live.id)
                    print("live", json.dumps(results["live"]), flush=True)
                context.close()
            if live is not None:
                client.stop(live.id)
                _wait(client, live.id)
    finally:
        remove_containers(LABEL)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
