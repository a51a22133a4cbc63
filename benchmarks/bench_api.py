"""API figures with 10,000 jobs stored: filtered listing latency and sustained status reads.

    .venv/bin/python -m benchmarks.bench_api [--jobs 10000] [--seconds 10] [--threads 8] [--workers N]

The jobs are written straight into the server's database (the API path of submitting is not what is
measured here), then a real server answers over HTTP. Baseline in the same run: ``/healthz`` (no
auth; since issue 11 one ``SELECT 1``, before it no database at all), so the ratio says what the API's
own work costs on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks._server import BenchServer, percentile
from deepdock.server.db.models import Job, JobEvent, Project, User
from deepdock.server.db.session import Database
from deepdock.server.services.auth import bootstrap_admin
from deepdock.settings import Settings

STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]


def seed(home: Path, n_jobs: int) -> list[str]:
    settings = Settings(home=home)
    db = Database(settings.db_url)
    db.migrate()
    with db.session() as session:
        token = bootstrap_admin(session)
    from deepdock.config import write_config

    write_config(settings, settings.url, token or "")
    ids: list[str] = []
    now = time.time()
    with db.session() as session:
        user = session.query(User).one()
        projects = [Project(name=f"team-{i}") for i in range(10)]
        session.add_all(projects)
        session.flush()
        rows, events = [], []
        for i in range(n_jobs):
            job_id = f"{i:012x}"
            ids.append(job_id)
            rows.append(Job(id=job_id, name=f"job-{i % 500}", project_id=projects[i % 10].id, user_id=user.id,
                            spec={"name": f"job-{i % 500}", "image": "x", "command": ["true"]}, status=STATUSES[i % 5],
                            # The QUEUED fifth asks for a GPU, which the local node lacks: they wait (with
                            # pending reasons) instead of churning through start failures of image "x".
                            cpus=1, memory=1 << 30, gpus=1 if STATUSES[i % 5] == "QUEUED" else 0,
                            priority=i % 3, submitted_at=now - n_jobs + i,
                            created_at=now - n_jobs + i, updated_at=now))
            events.append(JobEvent(job_id=job_id, to_status="QUEUED", reason="submitted", at=now - n_jobs + i))
        session.add_all(rows)
        session.add_all(events)
    db.dispose()
    return ids


def timed_gets(client: httpx.Client, path: str, params_list: list[dict]) -> list[float]:
    out = []
    for params in params_list:
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return out


def sustained(url: str, token: str, paths: list[str], seconds: float, threads: int) -> float:
    """Requests/s that the server sustains. Uses wrk (apt-get install wrk) when present: a Python load
    generator on this 2-core machine would measure itself more than the server."""
    if shutil.which("wrk"):
        return _wrk(url, token, paths, seconds)
    count = [0] * threads
    stop = threading.Event()

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            i = k
            while not stop.is_set():
                c.get(paths[i % len(paths)]).raise_for_status()
                count[k] += 1
                i += threads

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(count) / seconds


def _wrk(url: str, token: str, paths: list[str], seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("paths = {" + ",".join(json.dumps(p) for p in paths) + "}\n")
        f.write("counter = 0\n")
        f.write("request = function()\n  counter = counter + 1\n")
        f.write(f'  return wrk.format("GET", paths[(counter % #paths) + 1], {{["Authorization"] = "Bearer {token}"}})\n')
        f.write("end\n")
        f.write('done = function(summary, latency, requests)\n'
                '  io.write(string.format("RESULT %d %d %d\\n", summary.requests, summary.duration, '
                'summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))\nend\n')
        script = f.name
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{int(seconds)}s", "-s", script, url], capture_output=True, text=True,
                         check=True).stdout
    requests, duration_us, errors = (int(x) for x in out.split("RESULT")[1].split())
    if errors:
        raise RuntimeError(f"wrk saw {errors} errors:\n{out}")
    return requests / (duration_us / 1e6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0, help="API worker processes (0: the server's default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        ids = seed(home, args.jobs)
        # No engine is needed to answer reads; keep the node list empty so nothing else runs.
        with BenchServer(home, DEEPDOCK_DOCKER_HOST="unix:///nonexistent.sock",
                         DEEPDOCK_WORKERS=str(args.workers)) as srv:
            headers = {"Authorization": f"Bearer {srv.token}"}
            with httpx.Client(base_url=srv.url, headers=headers) as c:
                c.get("/api/v1/jobs").raise_for_status()  # warm up
                filters = [{"status": STATUSES[i % 5], "project": f"team-{i % 10}", "limit": 50} for i in range(200)]
                filters += [{"name": f"job-{i}", "limit": 50} for i in range(100)]
                filters += [{"status": ["QUEUED", "RUNNING"], "limit": 100} for _ in range(100)]
                list_lat = timed_gets(c, "/api/v1/jobs", filters)
                health_lat = timed_gets(c, "/healthz", [{}] * 400)
            status_paths = [f"/api/v1/jobs/{ids[i * 37 % len(ids)]}/status" for i in range(1000)]
            status_rps = sustained(srv.url, srv.token, status_paths, args.seconds, args.threads)
            health_rps = sustained(srv.url, srv.token, ["/healthz"], args.seconds, args.threads)
    result = {
        "jobs_stored": args.jobs,
        "workers": args.workers,
        "list_p50_ms": percentile(list_lat, 50) * 1000,
        "list_p99_ms": percentile(list_lat, 99) * 1000,
        "healthz_p99_ms": percentile(health_lat, 99) * 1000,
        "status_reads_per_s": status_rps,
        "healthz_per_s": health_rps,
        "status_vs_healthz_ratio": status_rps / health_rps,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
