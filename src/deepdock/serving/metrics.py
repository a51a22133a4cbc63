"""Prometheus metrics of one replica: requests by outcome, latency, batch sizes, model time, queue depth.

A registry of its own (not the process default), so two servers in one test process never share
counts. Names carry a ``deepdock_serving_`` prefix; the gateway's metrics (per service and revision)
are the proxy's.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    def __init__(self, model: str, max_batch_size: int, queued: Callable[[], float],
                 in_flight: Callable[[], float]) -> None:
        """``queued`` and ``in_flight`` are read at scrape time (no update on the request path)."""
        self.registry = CollectorRegistry()
        self.model = model
        self.requests = Counter("deepdock_serving_requests", "Inference requests by HTTP status code",
                                ["model", "code"], registry=self.registry)
        self.latency = Histogram("deepdock_serving_request_seconds", "Inference request latency in the server",
                                 ["model"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        buckets = sorted({float(b) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b < max_batch_size}
                         | {float(max_batch_size)})
        self.batch_rows = Histogram("deepdock_serving_batch_rows", "Rows per batch run through the model",
                                    ["model"], buckets=buckets, registry=self.registry)
        self.model_time = Histogram("deepdock_serving_model_seconds", "Time the model took per batch",
                                    ["model"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.queued = Gauge("deepdock_serving_queued_requests", "Requests waiting for a batch", ["model"],
                            registry=self.registry)
        self.in_flight = Gauge("deepdock_serving_in_flight_requests", "Requests being served", ["model"],
                               registry=self.registry)
        # Children bound once: the hot path does no label lookup.
        self._latency = self.latency.labels(model)
        self._batch = self.batch_rows.labels(model)
        self._model_time = self.model_time.labels(model)
        self._codes: dict[int, Counter] = {}
        self.in_flight.labels(model).set_function(in_flight)
        self.queued.labels(model).set_function(queued)

    def request(self, code: int, seconds: float) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.requests.labels(self.model, str(code))  # type: ignore[assignment]
        child.inc()  # type: ignore[union-attr]
        self._latency.observe(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        self._batch.observe(rows)
        self._model_time.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
