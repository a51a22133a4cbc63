"""Prometheus metrics: job and node gauges read from the DB at scrape time, request latency per route.

With several API worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by the control process before it
spawns them), each worker's histogram lives in files in that folder and a scrape of any worker sums
all of them; the DB gauges need no such care because every worker reads the same database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from deepdock.api.enums import JobStatus, NodeHealth, NodeStatus
from deepdock.server.db.models import Job, Node
from deepdock.server.db.session import Database

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.db.session() as session:
            jobs = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            nodes: dict[str, int] = {}
            for health, draining, count in session.execute(
                select(Node.status, Node.draining, func.count()).group_by(Node.status, Node.draining)
            ):
                shown = NodeStatus.DRAINING if draining and health == NodeHealth.READY else NodeStatus(health)
                nodes[shown] = nodes.get(shown, 0) + count
        by_job = GaugeMetricFamily("deepdock_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            by_job.add_metric([status], jobs.get(status, 0))
        by_node = GaugeMetricFamily("deepdock_nodes", "Nodes by status", labels=["status"])
        for node_status in NodeStatus:
            by_node.add_metric([node_status], nodes.get(node_status, 0))
        yield by_job
        yield by_node


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "deepdock_http_request_seconds", "API latency", ["method", "route"], registry=self.registry
        )
        self.database = DatabaseCollector(db)
        self.registry.register(self.database)

    def render(self) -> bytes:
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        # Every worker's request histogram (from the shared folder) plus the DB gauges.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self.database)
        return generate_latest(registry)
