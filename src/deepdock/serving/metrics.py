"""Prometheus metrics of one replica: requests by outcome, latency, batch sizes, model time, queue depth.

The request path only bumps plain counters (an int, a bucket found with ``bisect``); a collector turns
them into metric families when ``/metrics`` is scraped. Why not prometheus_client's ``Counter.inc`` and
``Histogram.observe`` on the hot path: each takes a lock and walks the buckets, ~6 µs a request in a
profile of the identity model, a fifth of the server's whole in-process cost. Every update and every
scrape runs on the server's event loop thread (the model's worker thread only computes), so plain
counters need no lock. A registry of its own (not the process default), so two servers in one test
process never share counts. Names carry a ``deepdock_serving_`` prefix; the gateway's metrics (per
service and revision) are the proxy's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    """Counts per bucket (``le`` is inclusive, as Prometheus defines it) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str, model: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["model"])
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([model], buckets, self.total)
        return family


class ServingMetrics:
    def __init__(self, model: str, max_batch_size: int, queued: Callable[[], float],
                 in_flight: Callable[[], float]) -> None:
        """``queued`` and ``in_flight`` are read at scrape time (no update on the request path)."""
        self.model = model
        self.codes: dict[int, int] = {}
        self.latency = _Histogram(LATENCY_BUCKETS_S)
        self.batch_rows = _Histogram(tuple(sorted({float(b) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
                                                   if b < max_batch_size} | {float(max_batch_size)})))
        self.model_time = _Histogram(LATENCY_BUCKETS_S)
        self._queued = queued
        self._in_flight = in_flight
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def request(self, code: int, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.latency.observe(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.model_time.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """The collector protocol of prometheus_client: the families as of this scrape."""
        requests = CounterMetricFamily("deepdock_serving_requests", "Inference requests by HTTP status code",
                                       labels=["model", "code"])
        for code, count in sorted(self.codes.items()):
            requests.add_metric([self.model, str(code)], count)
        yield requests
        yield self.latency.family("deepdock_serving_request_seconds", "Inference request latency in the server",
                                  self.model)
        yield self.batch_rows.family("deepdock_serving_batch_rows", "Rows per batch run through the model",
                                     self.model)
        yield self.model_time.family("deepdock_serving_model_seconds", "Time the model took per batch", self.model)
        for name, documentation, read in (
                ("deepdock_serving_queued_requests", "Requests waiting for a batch", self._queued),
                ("deepdock_serving_in_flight_requests", "Requests being served", self._in_flight)):
            gauge = GaugeMetricFamily(name, documentation, labels=["model"])
            gauge.add_metric([self.model], float(read()))
            yield gauge

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
