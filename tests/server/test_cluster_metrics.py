"""The cluster's Prometheus families, read from the database (SQLite and PostgreSQL) at scrape time."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deepdock.api.enums import JobStatus, NodeHealth
from deepdock.server.cluster_metrics import ClusterCollector
from deepdock.server.db.session import Database
from tests.server.factories import make_attempt, make_job, make_node, make_project, make_user

GIB = 1024**3


def scrape(db: Database) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(ClusterCollector(db))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_jobs_queue_nodes_and_services(db_url) -> None:  # type: ignore[no-untyped-def]
    db = Database(db_url)
    db.migrate()
    now = time.time()
    with db.session() as session:
        user = make_user(session)
        vision, nlp = make_project(session, "vision", members=[user]), make_project(session, "nlp", members=[user])
        make_node(session, "a", cpus=8, memory=32 * GIB, gpus=2)
        make_node(session, "b", cpus=4, status=NodeHealth.UNREACHABLE)
        running = make_job(session, user, vision, status=JobStatus.RUNNING, submitted_at=now - 100,
                           started_at=now - 90, resources={"cpus": 2, "memory": "4g", "gpus": 1})
        make_attempt(session, running, ["a"], container_ids=["c1"])
        make_job(session, user, vision, status=JobStatus.FAILED, submitted_at=now - 50, started_at=now - 47)
        make_job(session, user, nlp, status=JobStatus.QUEUED, submitted_at=now - 600)
        make_job(session, user, nlp, status=JobStatus.QUEUED, submitted_at=now - 60)
        session.commit()
    m = scrape(db)
    assert m[("deepdock_jobs", (("status", "QUEUED"),))] == 2
    assert m[("deepdock_project_jobs", (("project", "vision"), ("status", "RUNNING")))] == 1
    assert m[("deepdock_jobs_finished_total", (("project", "vision"), ("status", "FAILED")))] == 1
    assert m[("deepdock_queue_length", (("project", "nlp"),))] == 2
    assert 599 <= m[("deepdock_queue_oldest_wait_seconds", (("project", "nlp"),))] < 700
    # waits of the started jobs: 10 s and 3 s
    assert m[("deepdock_queue_wait_seconds_count", (("project", "vision"),))] == 2
    assert m[("deepdock_queue_wait_seconds_bucket", (("le", "5.0"), ("project", "vision")))] == 1
    assert m[("deepdock_queue_wait_seconds_bucket", (("le", "15.0"), ("project", "vision")))] == 2
    assert abs(m[("deepdock_queue_wait_seconds_sum", (("project", "vision"),))] - 13) < 0.01
    assert m[("deepdock_node_up", (("node", "a"),))] == 1 and m[("deepdock_node_up", (("node", "b"),))] == 0
    assert m[("deepdock_node_capacity_gpus", (("node", "a"),))] == 2
    assert m[("deepdock_node_allocated_cpus", (("node", "a"),))] == 2
    assert m[("deepdock_node_allocated_memory_bytes", (("node", "a"),))] == 4 * GIB
    assert m[("deepdock_node_allocated_gpus", (("node", "a"),))] == 1
    assert m[("deepdock_node_allocated_cpus", (("node", "b"),))] == 0
    db.dispose()
