"""The gateway for real: HAProxy routing, tokens, weights, reloads under load, failing replicas and the
access log it feeds."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from deepdock.errors import GatewayError
from deepdock.gateway.haproxy import Gateway
from deepdock.gateway.routes import Backend, Route
from tests.gateway.conftest import Replica, Running, free_port, haproxy_processes

TOKEN = "dd_test_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_LOAD_REQUESTS = 20_000


def route(*backends: tuple[Replica, int, int], key: str = "digits", tokens: tuple[str, ...] = (TOKEN,)) -> Route:
    return Route(key=key, path_name=key,
                 backends=tuple(Backend(f"r{rev}-{r.name}", "127.0.0.1", r.port, weight, rev)
                                for r, weight, rev in backends),
                 token_hashes=frozenset(hashlib.sha256(t.encode()).hexdigest() for t in tokens))


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@dataclass
class Load:
    """One keep-alive client calling the endpoint until stopped (bounded by MAX_LOAD_REQUESTS)."""

    url: str
    pause_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    replicas: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(MAX_LOAD_REQUESTS):
                if self._stop.is_set():
                    return
                try:
                    response = client.get(self.url, headers=AUTH)
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.replicas[response.json()["replica"]] += 1
                except httpx.HTTPError:
                    self.statuses[-1] += 1
                if self.pause_s:
                    self._stop.wait(self.pause_s)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


def test_routes_strip_the_prefix_and_the_token(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a = replicas("a")
    assert running.gateway.apply([route((a, 128, 1))]) == "reloaded"
    wait_for(lambda: running.gateway.server_states()[("digits", "r1-a")]["status"] == "UP")
    answer = httpx.post(f"{running.gateway.url}/services/digits/v2/models/m/infer?x=1", headers=AUTH, content=b"{}")
    assert answer.status_code == 200 and answer.json() == {"replica": "a", "path": "/v2/models/m/infer?x=1"}
    assert a.seen[-1]["authorization"] is None  # the caller's token never reaches the replica
    assert httpx.get(f"{running.gateway.url}/services/digits", headers=AUTH).json()["path"] == "/"
    assert running.gateway.apply([route((a, 128, 1))]) == "unchanged"


def test_callers_without_a_listed_token_get_401_and_unknown_services_404(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a = replicas("a")
    running.gateway.apply([route((a, 128, 1))])
    base = f"{running.gateway.url}/services/digits/v2/health/ready"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        answer = httpx.get(base, headers=headers)
        assert answer.status_code == 401 and "bearer token" in answer.json()["error"], headers
    for path in ("/services/other/x", "/services/digitsx/x", "/", "/v2/health/ready"):
        answer = httpx.get(running.gateway.url + path, headers=AUTH)
        assert answer.status_code == 404 and answer.json() == {"error": "no such service"}, path
    assert not a.seen


def test_weights_split_traffic_and_change_without_a_reload(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas("a"), replicas("b")
    running.gateway.apply([route((a, 230, 1), (b, 26, 2))])
    wait_for(lambda: {s["status"] for s in running.gateway.server_states().values()} == {"UP"})
    with httpx.Client() as client:
        seen = Counter(client.get(f"{running.gateway.url}/services/digits/", headers=AUTH).json()["replica"]
                       for _ in range(200))
    assert 170 <= seen["a"] <= 190 and seen["a"] + seen["b"] == 200, seen  # 230:26 ≈ 9:1
    assert running.gateway.apply([route((a, 0, 1), (b, 256, 2))]) == "runtime"
    assert running.gateway.server_states()[("digits", "r1-a")]["weight"] == "0"
    with httpx.Client() as client:
        assert {client.get(f"{running.gateway.url}/services/digits/", headers=AUTH).json()["replica"]
                for _ in range(20)} == {"b"}


def test_reloads_under_load_fail_no_request(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a, b, c = replicas("a"), replicas("b"), replicas("c")
    running.gateway.apply([route((a, 128, 1))])
    with Load(f"{running.gateway.url}/services/digits/") as load, Load(f"{running.gateway.url}/services/digits/") as idle:
        idle.pause_s = 0.9  # keep-alive connections idle across the reloads, then used again
        wait_for(lambda: load.statuses[200] > 20)
        for i in range(6):
            # A second service appears and goes (each a reload) while the first one's replicas change.
            extra = [route((c, 128, 1), key="other")] if i % 2 else []
            running.gateway.apply([route((a, 128, 1), (b, 128, 2) if i % 2 else (c, 64, 3)), *extra])
            time.sleep(0.4)
    assert running.gateway.reloads() == 6
    assert load.failed == 0 and load.statuses[200] > 100, load.statuses
    assert idle.failed == 0 and idle.statuses[200] >= 3, idle.statuses
    assert set(load.replicas) >= {"a", "b", "c"}


def test_replicas_and_tokens_change_at_runtime_without_a_reload(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a, b, c = replicas("a"), replicas("b"), replicas("c")
    running.gateway.apply([route((a, 128, 1))])
    with Load(f"{running.gateway.url}/services/digits/") as load:
        wait_for(lambda: load.statuses[200] > 20)
        for backends in ([(a, 128, 1), (b, 128, 2)], [(b, 256, 2)], [(b, 128, 2), (c, 128, 3)], [(c, 256, 3)]):
            assert running.gateway.apply([route(*backends)]) == "runtime"
            names = [f"r{rev}-{r.name}" for r, _, rev in backends]
            wait_for(lambda names=names: all(  # type: ignore[misc]
                running.gateway.server_states().get(("digits", n), {}).get("status") == "UP" for n in names))
            time.sleep(0.3)
    assert running.gateway.reloads() == 1  # only the first apply, which added the service
    assert load.failed == 0 and set(load.replicas) == {"a", "b", "c"}, (load.statuses, load.replicas)
    # the ones taken out are deleted from HAProxy once their connections are gone (retried at each apply)
    wait_for(lambda: running.gateway.apply([route((c, 256, 3))]) == "unchanged"
             and set(running.gateway.server_states()) == {("digits", "r3-c")})
    assert running.gateway.apply([route((c, 256, 3), tokens=("new-token",))]) == "runtime"
    assert httpx.get(f"{running.gateway.url}/services/digits/", headers=AUTH).status_code == 401
    assert httpx.get(f"{running.gateway.url}/services/digits/",
                     headers={"Authorization": "Bearer new-token"}).status_code == 200


def test_a_replica_that_dies_costs_no_request(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas("a"), replicas("b")
    running.gateway.apply([route((a, 128, 1), (b, 128, 1))])
    with Load(f"{running.gateway.url}/services/digits/") as load:
        wait_for(lambda: load.replicas["b"] > 10)
        b.kill()  # no drain: connections to it are refused and retried on a
        wait_for(lambda: running.gateway.server_states()[("digits", "r1-b")]["status"] == "DOWN")
        after_down = load.statuses[200]
        wait_for(lambda: load.statuses[200] > after_down + 20)
    assert load.failed == 0, load.statuses


def test_no_ready_replica_is_a_503_with_a_reason(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a = replicas("a")
    a.ready = False
    running.gateway.apply([route((a, 128, 1))])
    wait_for(lambda: running.gateway.server_states()[("digits", "r1-a")]["status"] == "DOWN")
    answer = httpx.get(f"{running.gateway.url}/services/digits/", headers=AUTH)
    assert answer.status_code == 503 and answer.json() == {"error": "no ready replica of this service"}
    a.ready = True
    wait_for(lambda: running.gateway.server_states()[("digits", "r1-a")]["status"] == "UP")
    assert httpx.get(f"{running.gateway.url}/services/digits/", headers=AUTH).status_code == 200


def test_the_access_log_measures_each_revision(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    good, slow_bad = replicas("good"), replicas("bad")
    slow_bad.status, slow_bad.delay_s = 500, 0.05
    running.gateway.apply([route((good, 128, 1), (slow_bad, 128, 2))])
    wait_for(lambda: {s["status"] for s in running.gateway.server_states().values()} == {"UP"})
    started = time.time()
    with httpx.Client() as client:
        statuses = Counter(client.get(f"{running.gateway.url}/services/digits/", headers=AUTH).status_code
                           for _ in range(40))
    assert statuses == {200: 20, 500: 20}  # a 500 is the model's answer: not retried (a 503 would be)
    wait_for(lambda: running.access_log.window("digits", 60).requests >= 40)
    bad = running.access_log.window("digits", 60, revision=2)
    good_stats = running.access_log.window("digits", 60, revision=1)
    assert bad.requests == bad.errors > 0 and bad.error_rate == 1.0 and bad.p99_ms >= 50
    assert good_stats.errors == 0 and good_stats.p99_ms < 50
    assert running.access_log.revisions_seen("digits") == {1, 2}
    elapsed = time.time() - started
    whole = running.access_log.window("digits", elapsed + 1)
    assert whole.requests == 40 and whole.concurrency > 0


def test_a_bad_configuration_is_refused_and_the_running_one_kept(running: Running, replicas) -> None:  # type: ignore[no-untyped-def]
    a = replicas("a")
    running.gateway.apply([route((a, 128, 1))])
    bad = Route(key="x", path_name="x", backends=(Backend("r1-y", "not a host", 80, 1, 1),))
    with pytest.raises(GatewayError):
        running.gateway.apply([route((a, 128, 1)), bad])
    wait_for(lambda: running.gateway.server_states()[("digits", "r1-a")]["status"] == "UP")
    assert httpx.get(f"{running.gateway.url}/services/digits/", headers=AUTH).status_code == 200


def test_start_stops_a_gateway_left_by_a_killed_server(tmp_path, haproxy_bin) -> None:  # type: ignore[no-untyped-def]
    workdir = tmp_path / "gw"
    first = Gateway(workdir, port=free_port(), log_port=free_port(), haproxy_bin=haproxy_bin)
    first.start()
    left = haproxy_processes(workdir)
    assert left
    second = Gateway(workdir, port=free_port(), log_port=free_port(), haproxy_bin=haproxy_bin)
    try:
        second.start()  # the first one's master is found by its pid file and stopped
        assert not set(left) & set(haproxy_processes(workdir))
    finally:
        second.stop()
        first.stop()
    assert not haproxy_processes(workdir)


def test_a_missing_haproxy_is_a_named_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GatewayError, match="cannot run"):
        Gateway(tmp_path, port=free_port(), log_port=free_port(), haproxy_bin=str(tmp_path / "nope")).start()


def test_servers_added_at_runtime_become_configured_ones_once_routes_hold_still(  # type: ignore[no-untyped-def]
        running: Running, replicas, monkeypatch) -> None:
    import deepdock.gateway.haproxy as haproxy

    monkeypatch.setattr(haproxy, "CONSOLIDATE_AFTER_S", 0.5)
    a, b = replicas("a"), replicas("b")
    running.gateway.apply([route((a, 128, 1))])
    assert running.gateway.apply([route((a, 128, 1), (b, 128, 2))]) == "runtime"
    assert running.gateway.apply([route((a, 128, 1), (b, 128, 2))]) == "unchanged"
    time.sleep(0.6)
    assert running.gateway.apply([route((a, 128, 1), (b, 128, 2))]) == "reloaded"
    assert running.gateway.apply([route((a, 128, 1), (b, 128, 2))]) == "unchanged"
    wait_for(lambda: {s["status"] for s in running.gateway.server_states().values()} == {"UP"})
    with httpx.Client() as client:
        assert {client.get(f"{running.gateway.url}/services/digits/", headers=AUTH).json()["replica"]
                for _ in range(10)} == {"a", "b"}


def test_a_port_already_taken_is_a_named_error(tmp_path, haproxy_bin) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gateway = Gateway(tmp_path / "gw", port=taken.getsockname()[1], log_port=free_port(), haproxy_bin=haproxy_bin)
        with pytest.raises(GatewayError, match=r"haproxy exited at start: .*cannot bind socket \(Address already in use\)"):
            gateway.start()
    assert not haproxy_processes(tmp_path / "gw")


def test_the_exporter_counts_each_service_and_replica(tmp_path, haproxy_bin, replicas) -> None:  # type: ignore[no-untyped-def]
    metrics_port = free_port()
    gateway = Gateway(tmp_path / "gw", port=free_port(), log_port=free_port(), haproxy_bin=haproxy_bin,
                      metrics_port=metrics_port)
    gateway.start()
    try:
        a = replicas("a")
        gateway.apply([route((a, 128, 1))])
        wait_for(lambda: gateway.server_states()[("digits", "r1-a")]["status"] == "UP")
        for _ in range(3):
            assert httpx.get(f"{gateway.url}/services/digits/", headers=AUTH).status_code == 200
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'haproxy_backend_http_responses_total{proxy="svc_digits",code="2xx"} 3' in text
        assert 'haproxy_server_http_responses_total{proxy="svc_digits",server="r1-a",code="2xx"} 3' in text
    finally:
        gateway.stop()
