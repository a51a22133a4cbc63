"""Prometheus metrics: gauges computed from the DB at scrape time, counters from the request path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from deepdock.server.db.models import Job, Node
from deepdock.server.db.session import Database
from deepdock.server.services.lifecycle import ALL_STATES


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("deepdock_jobs", "Jobs by status", ["status"], registry=self.registry)
        self.nodes = Gauge("deepdock_nodes", "Nodes by status", ["status"], registry=self.registry)
        self.request_seconds = Histogram(
            "deepdock_http_request_seconds", "API latency", ["method", "route"], registry=self.registry
        )

    def render(self, db: Database) -> bytes:
        with db.session() as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            nodes = dict(session.execute(select(Node.status, func.count()).group_by(Node.status)).all())
        for status in ALL_STATES:
            self.jobs.labels(status).set(by_status.get(status, 0))
        for status in ("ready", "unreachable", "draining"):
            self.nodes.labels(status).set(nodes.get(status, 0))
        return generate_latest(self.registry)
