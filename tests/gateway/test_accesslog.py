"""Parsing HAProxy's log lines and the windows the rollout step judges (no HAProxy: lines made here)."""

from __future__ import annotations

import socket
import time

import pytest

from deepdock.gateway.accesslog import AccessLog, Entry, parse


@pytest.mark.parametrize(("line", "expected"), [
    ("ddgw svc_digits r3-abc 200 12 10 --", ("digits", 3, 200, 12.0, False)),
    ("ddgw svc_digits r3-abc 500 7 5 --", ("digits", 3, 500, 7.0, True)),
    ("ddgw svc_digits r1-abc 502 3 -1 SH", ("digits", 1, 502, 3.0, True)),
    ("ddgw svc_digits <NOSRV> 503 0 -1 SC", ("digits", None, 503, 0.0, True)),
    ("ddgw svc_digits r2-x 200 40 1 CD", ("digits", 2, 200, 40.0, False)),  # the caller went away
])
def test_parse(line: str, expected: tuple[object, ...]) -> None:
    parsed = parse(line, 1.0)
    assert parsed is not None
    key, entry = parsed
    assert (key, entry.revision, entry.status, entry.active_ms, entry.error) == expected


@pytest.mark.parametrize("line", [
    "ddgw svc_digits <NOSRV> 401 0 -1 LR",  # HAProxy refused the caller: not the service's request
    "ddgw no_such_service <NOSRV> 404 0 -1 LR",
    "ddgw services <NOSRV> 400 0 -1 CR",
    "Proxy svc_digits stopped (cumulated conns: FE: 0, BE: 4).",
    "ddgw svc_digits r1-a x 1 1 --",
])
def test_parse_ignores_what_is_not_a_service_request(line: str) -> None:
    assert parse(line, 1.0) is None


def test_window_counts_rates_latency_and_concurrency() -> None:
    log = AccessLog()
    try:
        for i in range(100):  # 100 requests over 10 s, 1 in 10 failing, latencies 1..100 ms
            log.record("digits", Entry(at=1000.0 + i / 10, revision=1 + (i % 2), status=500 if i % 10 == 0 else 200,
                                       active_ms=float(i + 1), error=i % 10 == 0))
        log.record("other", Entry(at=1005.0, revision=1, status=200, active_ms=1.0, error=False))
        stats = log.window("digits", 10, now=1010.0)
        assert (stats.requests, stats.errors, stats.error_rate) == (100, 10, 0.1)
        assert (stats.p50_ms, stats.p99_ms) == (50.0, 99.0)
        assert stats.rps == 10.0
        assert stats.concurrency == pytest.approx(sum(range(1, 101)) / 1000 / 10)
        assert log.window("digits", 5, now=1010.0).requests == 50
        assert log.window("digits", 10, revision=2, now=1010.0).requests == 50
        assert log.window("digits", 10, revision=3, now=1010.0).requests == 0
        assert log.window("nothing", 10).p99_ms == 0.0
        assert log.revisions_seen("digits") == {1, 2}
    finally:
        log.stop()


def test_lines_arrive_over_udp() -> None:
    log = AccessLog()
    log.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(3):
                sender.sendto(b"ddgw svc_digits r1-a 200 4 3 --\n", ("127.0.0.1", log.port))
        deadline = time.monotonic() + 5
        while log.window("digits", 60).requests < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        log.stop()
