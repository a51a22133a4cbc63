"""Several Docker hosts on this one machine (scripts/netns_hosts.sh), for multi-node tests.

Each host is a network namespace ``ddh<i>`` at 10.231.0.(10+i) with its own dockerd on
``tcp://10.231.0.(10+i):2375``, joined to the others by a bridge in the root namespace, with no route
out of the machine and a DNS stub (10.231.0.1) that knows only the hosts' names. Containers there use
``network_mode="host"`` to talk across hosts (they see the host's ``dd0`` link and address).

The session fixture ``netns_hosts`` lives in tests/integration/conftest.py (one instance for every module)::

    from tests.integration.netns import NETNS_IMAGE

    def test_something(netns_hosts):
        api = docker.APIClient(base_url=netns_hosts[0].engine_url)
        ...  # every container made there carries the TEST_LABEL label

``netns_hosts`` starts three hosts (or fails under CI=true / skips otherwise when they cannot start),
imports the busybox test image as ``NETNS_IMAGE`` into each engine, and tears everything down at the
end, removing every container labelled ``TEST_LABEL`` first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from tests.conftest import IN_CI
from tests.integration.conftest import TEST_LABEL, busybox_rootfs_tar, import_image

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_SCRIPT = REPO_ROOT / "scripts" / "netns_hosts.sh"
MAX_HOSTS = 4
DEFAULT_HOSTS = 3
ENGINE_PORT = 2375
# The busybox test image (tests/integration/conftest.py) as every namespace engine holds it.
NETNS_IMAGE = "deepdock-test-busybox:netns"
# The script waits up to 60 s for the engines; this leaves room for the dnsmasq install and teardown.
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 120
ENGINE_CALL_TIMEOUT_S = 60


@dataclass(frozen=True)
class NamespaceHost:
    name: str  # ddh<i>: the engine's hostname (``docker info`` Name) and its DNS name
    address: str  # 10.231.0.(10+i)
    engine_url: str  # tcp://10.231.0.(10+i):2375

    @property
    def index(self) -> int:
        return int(self.name.removeprefix("ddh"))


class NetnsHostsError(RuntimeError):
    """The script failed; the message holds its output (with the engine's log tail on a start failure)."""


def host(i: int) -> NamespaceHost:
    address = f"10.231.0.{10 + i}"
    return NamespaceHost(name=f"ddh{i}", address=address, engine_url=f"tcp://{address}:{ENGINE_PORT}")


def _script(*args: str, timeout_s: float) -> str:
    try:
        proc = subprocess.run(
            ["bash", str(NETNS_SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsHostsError(f"netns_hosts.sh {' '.join(args)} ran past {timeout_s}s") from exc
    if proc.returncode != 0:
        raise NetnsHostsError(f"netns_hosts.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def start_hosts(n: int = DEFAULT_HOSTS) -> list[NamespaceHost]:
    """Hosts 1..n up with answering engines (hosts already up are left alone)."""
    if not 1 <= n <= MAX_HOSTS:
        raise ValueError(f"1..{MAX_HOSTS} hosts, not {n}")
    _script("start", str(n), timeout_s=START_TIMEOUT_S)
    return [host(i) for i in range(1, n + 1)]


def stop_hosts() -> None:
    """Everything down (engines, DNS stub, namespaces, links, the iptables rule); data roots are kept."""
    _script("stop", timeout_s=STOP_TIMEOUT_S)


def stop_engine(h: NamespaceHost) -> None:
    """SIGKILL the host's dockerd, containerd, shims and containers, like a machine that was lost."""
    _script("stop-engine", str(h.index), timeout_s=STOP_TIMEOUT_S)


def start_engine(h: NamespaceHost) -> None:
    """Start the host's engine again (after ``stop_engine``) and wait until it answers."""
    _script("start-engine", str(h.index), timeout_s=START_TIMEOUT_S)


def hosts_up() -> list[NamespaceHost]:
    """The hosts whose namespace exists (their engine may be stopped)."""
    return [host(i) for i in range(1, MAX_HOSTS + 1) if os.path.exists(f"/run/netns/ddh{i}")]


def engine_answers(h: NamespaceHost, timeout_s: float = 5) -> bool:
    import docker

    # Only probe a host that exists: without the bridge the probe would take the default route out.
    if not os.path.exists(f"/run/netns/{h.name}"):
        return False
    try:
        client = docker.APIClient(base_url=h.engine_url, version="1.41", timeout=timeout_s)
        try:
            client.ping()
        finally:
            client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def api_client(h: NamespaceHost, timeout_s: float = ENGINE_CALL_TIMEOUT_S):
    import docker

    return docker.APIClient(base_url=h.engine_url, version="1.41", timeout=timeout_s)


def remove_test_containers(h: NamespaceHost, label_value: str | None = None) -> None:
    """Remove the containers labelled ``TEST_LABEL`` (with that value, when given) on a host's engine."""
    if not engine_answers(h):
        return
    flt = TEST_LABEL if label_value is None else f"{TEST_LABEL}={label_value}"
    client = api_client(h)
    try:
        for c in client.containers(all=True, filters={"label": flt}):
            client.remove_container(c["Id"], force=True)
    finally:
        client.close()


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"namespace Docker hosts are required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"namespace Docker hosts not available: {reason}")


def import_test_image(hosts: list[NamespaceHost]) -> None:
    """The busybox test image, as ``NETNS_IMAGE``, into each host's engine."""
    rootfs = busybox_rootfs_tar()
    repository, tag = NETNS_IMAGE.rsplit(":", 1)
    for h in hosts:
        client = api_client(h)
        try:
            import_image(client, rootfs, repository, tag)
        finally:
            client.close()


def hosts_session() -> Iterator[list[NamespaceHost]]:
    """Three namespace Docker hosts with ``NETNS_IMAGE`` loaded; everything stopped at the end. The
    ``netns_hosts`` fixture of tests/integration/conftest.py (one for the whole session) runs this."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("ip") is None:
        _unavailable("they need root, dockerd and iproute2 (scripts/netns_hosts.sh)")
    try:
        hosts = start_hosts(DEFAULT_HOSTS)
    except NetnsHostsError as exc:
        _unavailable(str(exc))
    try:
        import_test_image(hosts)
        yield hosts
    finally:
        for h in hosts:
            remove_test_containers(h)
            if engine_answers(h):
                client = api_client(h)
                try:
                    client.remove_image(NETNS_IMAGE, force=True)
                except Exception:  # noqa: BLE001 - best effort: the engines stop below anyway
                    pass
                finally:
                    client.close()
        stop_hosts()
