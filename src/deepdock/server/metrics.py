"""Prometheus metrics: the cluster read from the DB at scrape time (cluster_metrics), API latency per route.

With several API worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by the control process before it
spawns them), each worker's histogram lives in files in that folder and a scrape of any worker sums
all of them; the DB gauges need no such care because every worker reads the same database.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from deepdock.server.cluster_metrics import ClusterCollector
from deepdock.server.db.session import Database

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "deepdock_http_request_seconds", "API latency", ["method", "route"], registry=self.registry
        )
        self.database = ClusterCollector(db)
        self.registry.register(self.database)

    def render(self) -> bytes:
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        # Every worker's request histogram (from the shared folder) plus the DB gauges.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self.database)
        return generate_latest(registry)
