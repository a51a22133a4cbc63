"""`/metrics` with a real history: 10,000 jobs over 5 projects and 50 nodes, on SQLite (and PostgreSQL
when ``DEEPDOCK_TEST_POSTGRES_URL`` is set).

    .venv/bin/python -m benchmarks.bench_metrics [--jobs 10000] [--nodes 50] [--json OUT]

Measured: one scrape of the server's registry (``Metrics.render``: every cluster family, as
``GET /metrics`` returns it), median of 20 after a warm-up, against the baseline of the same database
read the naive way (every job row loaded and counted in Python). Goal (issue 15): ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from deepdock.api.enums import AttemptStatus, JobStatus, NodeHealth, ReplicaStatus
from deepdock.server.db.models import Attempt, Job, Membership, Node, Project, Replica, User
from deepdock.server.db.session import Database
from deepdock.server.metrics import Metrics

ROUNDS = 20
STATUSES = [JobStatus.SUCCEEDED] * 6 + [JobStatus.FAILED, JobStatus.STOPPED, JobStatus.QUEUED, JobStatus.RUNNING]


def fill(db: Database, jobs: int, nodes: int) -> None:
    rng = random.Random(0)
    now = time.time()
    with db.session() as session:
        user = User(name="admin", is_admin=True)
        session.add(user)
        projects = [Project(name=f"team-{i}") for i in range(5)]
        session.add_all(projects)
        session.flush()
        session.add_all(Membership(user_id=user.id, project_id=p.id) for p in projects)
        session.add_all(Node(name=f"node-{i:02d}", engine_url=f"fake://node-{i:02d}", cpus=64, memory=512 * 1024**3,
                             gpus=[{"index": g, "uuid": f"GPU-{i}-{g}", "model": "A100", "memory": 80 * 1024**3}
                                   for g in range(8)], labels={}, engine_version="fake",
                             status=NodeHealth.READY if i % 17 else NodeHealth.UNREACHABLE, last_seen_at=now)
                        for i in range(nodes))
        session.flush()
        for i in range(jobs):
            status = rng.choice(STATUSES)
            submitted = now - rng.uniform(0, 30 * 86400)
            started = None if status == JobStatus.QUEUED else submitted + rng.expovariate(1 / 120)
            job = Job(id=uuid.uuid4().hex[:12], name=f"job-{i}", project_id=rng.choice(projects).id, user_id=user.id,
                      spec={}, status=status, cpus=4, memory=16 * 1024**3, gpus=1, submitted_at=submitted,
                      created_at=submitted, updated_at=submitted, started_at=started)
            session.add(job)
            if status == JobStatus.RUNNING:
                session.flush()  # the job row first: attempts reference it
                attempt = Attempt(job_id=job.id, number=1, status=AttemptStatus.RUNNING, network="none")
                attempt.replicas.append(Replica(job_id=job.id, rank=0, node_name=f"node-{rng.randrange(nodes):02d}",
                                                active=True, container_name=f"dd-{job.id}", status=ReplicaStatus.RUNNING))
                session.add(attempt)
            if i % 1000 == 999:
                session.flush()
        session.commit()


def timed(fn: Any) -> dict[str, float]:
    fn()
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(samples), "max_ms": max(samples)}


def naive(db: Database) -> None:
    with db.session() as session:
        counts: dict[tuple[int, str], int] = {}
        for project_id, status in session.execute(select(Job.project_id, Job.status)):
            counts[(project_id, status)] = counts.get((project_id, status), 0) + 1


def measure(url: str, jobs: int, nodes: int) -> dict[str, Any]:
    db = Database(url)
    db.migrate()
    fill(db, jobs, nodes)
    metrics = Metrics(db)
    size = len(metrics.render())
    out = {"scrape": timed(metrics.render), "naive_job_rows": timed(lambda: naive(db)), "bytes": size}
    db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/bench.db", args.jobs, args.nodes)
        print("sqlite", json.dumps(results["sqlite"]), flush=True)
    base = os.environ.get("DEEPDOCK_TEST_POSTGRES_URL")
    if base:
        name = f"dd_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            results["postgres"] = measure(base.rsplit("/", 1)[0] + f"/{name}", args.jobs, args.nodes)
            print("postgres", json.dumps(results["postgres"]), flush=True)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
