"""Several Docker hosts on one machine (scripts/netns_hosts.sh): each engine is its own host, containers
with host networking reach each other across hosts, nothing reaches out of the machine, and an engine
can be lost and brought back."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.integration.conftest import TEST_LABEL, wait_until
from tests.integration.netns import (
    NETNS_IMAGE,
    NamespaceHost,
    api_client,
    engine_answers,
    remove_test_containers,
    start_engine,
    stop_engine,
)

pytestmark = pytest.mark.docker

# A port for the test servers; each server checks it is free on its host before it binds.
PORT = 24680
# Blocked traffic must fail at once (no route), not after a timeout.
FAIL_FAST_S = 2.0


@pytest.fixture
def labels(netns_hosts) -> Iterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:12]
    yield {TEST_LABEL: run_id}
    for h in netns_hosts:
        remove_test_containers(h, run_id)


def _run(h: NamespaceHost, labels: dict[str, str], script: str) -> str:
    """Start a host-network busybox container on ``h`` running ``sh -c script``; returns its id."""
    api = api_client(h)
    try:
        c = api.create_container(
            NETNS_IMAGE,
            command=["sh", "-c", script],
            labels=labels,
            host_config=api.create_host_config(network_mode="host"),
        )
        api.start(c["Id"])
        return c["Id"]
    finally:
        api.close()


def _exec(h: NamespaceHost, cid: str, script: str) -> tuple[int, str, float]:
    """``sh -c script`` in a running container: exit code, stdout+stderr, seconds it took."""
    api = api_client(h)
    try:
        t0 = time.monotonic()
        e = api.exec_create(cid, ["sh", "-c", script])
        out = api.exec_start(e["Id"]).decode(errors="replace")
        code = api.exec_inspect(e["Id"])["ExitCode"]
        return code, out, time.monotonic() - t0
    finally:
        api.close()


def _running(h: NamespaceHost, cid: str) -> bool:
    api = api_client(h)
    try:
        return bool(api.inspect_container(cid)["State"]["Running"])
    finally:
        api.close()


def _serve(h: NamespaceHost, labels: dict[str, str]) -> str:
    """A busybox httpd on h.address:PORT (host network) answering ``hello-from-<hostname>``."""
    cid = _run(
        h,
        labels,
        f"netstat -ltn | grep -q ':{PORT} ' && exit 3; mkdir -p /www && echo hello-from-$(hostname) >/www/index.html"
        f" && exec httpd -f -p {h.address}:{PORT} -h /www",
    )
    # httpd listens within a moment; the server exits 3 when the port was taken.
    probe = _run(h, labels, "sleep 120")
    assert wait_until(lambda: _exec(h, probe, f"netstat -ltn | grep -q '{h.address}:{PORT} '")[0] == 0, 10), (
        f"httpd on {h.name} did not listen (running: {_running(h, cid)})"
    )
    return cid


def _get(client_host: NamespaceHost, cid: str, target: str) -> tuple[int, str, float]:
    return _exec(client_host, cid, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} {PORT}")


def test_each_engine_is_its_own_host(netns_hosts):
    assert [h.name for h in netns_hosts] == ["ddh1", "ddh2", "ddh3"]
    for i, h in enumerate(netns_hosts, start=1):
        assert h.address == f"10.231.0.{10 + i}" and h.engine_url == f"tcp://{h.address}:2375"
        api = api_client(h)
        try:
            assert api.ping()
            info = api.info()
            assert info["Name"] == h.name
            assert info["DockerRootDir"] == f"/var/lib/deepdock-nshost{i}"
            assert "nvidia" in info["Runtimes"]
            assert any(NETNS_IMAGE in (img.get("RepoTags") or []) for img in api.images())
        finally:
            api.close()


def test_host_network_container_reached_from_another_host(netns_hosts, labels):
    h1, h2 = netns_hosts[0], netns_hosts[1]
    _serve(h1, labels)
    client = _run(h2, labels, "sleep 120")
    # A host-network container sees its host's link and address, hostname and names of the others.
    code, out, _ = _exec(h2, client, "ip -o -4 addr show dd0; hostname; cat /etc/hosts")
    assert code == 0, out
    assert "dd0" in out and "inet 10.231.0.12/24" in out
    assert "\nddh2\n" in out and "10.231.0.11 ddh1" in out
    code, out, _ = _get(h2, client, h1.address)
    assert code == 0 and "200 OK" in out and "hello-from-ddh1" in out, out
    # By name too (the hosts file / the DNS stub).
    code, out, _ = _get(h2, client, "ddh1")
    assert code == 0 and "hello-from-ddh1" in out, out


def test_no_route_out_of_the_machine(netns_hosts, labels):
    h = netns_hosts[1]
    cid = _run(h, labels, "sleep 120")

    code, out, _ = _exec(h, cid, "ip route; echo ---; ip -6 route")
    assert code == 0, out
    assert "default" not in out, out
    assert "10.231.0.0/24 dev dd0" in out, out

    code, out, took = _exec(h, cid, "nc -w 5 1.1.1.1 80 </dev/null")
    assert code != 0 and "Network is unreachable" in out, out
    assert took < FAIL_FAST_S, took
    code, out, took = _exec(h, cid, "ping6 -c1 -W5 2606:4700:4700::1111")
    assert code != 0 and "Network is unreachable" in out, out
    assert took < FAIL_FAST_S, took

    # Names: the stub knows the hosts and answers anything else NXDOMAIN at once (no upstream).
    code, out, _ = _exec(h, cid, "cat /etc/resolv.conf")
    assert out.split() == ["nameserver", "10.231.0.1"], out
    for lookup in ("nslookup example.com 10.231.0.1", "nslookup example.com"):
        code, out, took = _exec(h, cid, lookup)
        assert code != 0 and "NXDOMAIN" in out, out
        assert took < FAIL_FAST_S, (lookup, took)
    code, out, took = _exec(h, cid, "nslookup ddh2 10.231.0.1")
    assert code == 0 and "Address: 10.231.0.12" in out, out
    assert took < FAIL_FAST_S, took

    # The root namespace's fence: nothing forwarded from the hosts' bridge leaves by another link.
    rule = ["iptables", "-C", "FORWARD", "-i", "ddbr0", "!", "-o", "ddbr0", "-j", "DROP"]
    assert subprocess.run(rule, capture_output=True, check=False).returncode == 0


def test_lost_engine_and_back(netns_hosts, labels):
    h1, h3 = netns_hosts[0], netns_hosts[2]
    server = _serve(h3, labels)
    client = _run(h1, labels, "sleep 300")
    code, out, _ = _get(h1, client, h3.address)
    assert code == 0 and "hello-from-ddh3" in out, out

    t0 = time.monotonic()
    try:
        stop_engine(h3)
        stopped_s = time.monotonic() - t0
        # Unreachable at once (connection refused: the host is still there, its engine is not) ...
        t1 = time.monotonic()
        assert not engine_answers(h3, timeout_s=5)
        assert time.monotonic() - t1 < FAIL_FAST_S
        assert stopped_s < 10, stopped_s
        # ... and so are its containers: they died with it, like on a machine that lost power.
        code, out, took = _get(h1, client, h3.address)
        assert code != 0 and "Connection refused" in out, out
        assert took < FAIL_FAST_S, took
        # The other hosts go on.
        assert engine_answers(h1) and engine_answers(netns_hosts[1])
    finally:
        start_engine(h3)
    assert engine_answers(h3)
    api = api_client(h3)
    try:
        state = api.inspect_container(server)["State"]
        # The engine finds its container dead after the loss: known, not running, kept for inspection.
        assert not state["Running"] and state["Status"] == "exited", state
        assert any(NETNS_IMAGE in (img.get("RepoTags") or []) for img in api.images())
        # And it runs containers again (host networking: the host's hostname).
        c = api.create_container(
            NETNS_IMAGE,
            command=["sh", "-c", "hostname"],
            labels=labels,
            host_config=api.create_host_config(network_mode="host"),
        )
        api.start(c["Id"])
        assert api.wait(c["Id"], timeout=30)["StatusCode"] == 0
        assert api.logs(c["Id"]).decode().strip() == "ddh3"
    finally:
        api.close()
