"""Shared fixtures. Under CI=true a missing Docker engine or PostgreSQL is a failure, never a skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A server a test starts runs no services gateway unless the test gives it a port of its own: many servers
# run at once (pytest-xdist, subprocess servers) and would all claim the default one.
os.environ.setdefault("DEEPDOCK_GATEWAY_PORT", "0")
os.environ.setdefault("DEEPDOCK_GATEWAY_METRICS_PORT", "0")  # a test that wants it picks a free port
# Every container, network, volume and image a test creates carries this label, so cleanup finds it.
TEST_LABEL = "deepdock.test"


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        _missing(f"a Docker engine ({exc})")
    yield client
    client.close()


@pytest.fixture
def test_run_id() -> str:
    """A unique value for this test's label, so cleanup only touches what this test made."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def labelled_cleanup(docker_client, test_run_id) -> Iterator[dict[str, str]]:
    """Labels to put on everything a test creates; afterwards every object with them is removed."""
    labels = {TEST_LABEL: test_run_id}
    yield labels
    flt = {"label": f"{TEST_LABEL}={test_run_id}"}
    for c in docker_client.containers.list(all=True, filters=flt):
        c.remove(force=True)
    for n in docker_client.networks.list(filters=flt):
        n.remove()
    for v in docker_client.volumes.list(filters=flt):
        v.remove(force=True)
    for img in docker_client.images.list(filters=flt):
        try:
            docker_client.images.remove(img.id, force=True)
        except Exception:  # noqa: BLE001 - an image still used by a parent is removed with it
            pass


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("DEEPDOCK_TEST_POSTGRES_URL", "")
    if not url:
        _missing("PostgreSQL (set DEEPDOCK_TEST_POSTGRES_URL)")
    return url


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS, tests/artifacts/seaweed.py) for the session: the artifact
    store's tests and the server's S3 runs share it (it takes ~5 s to become writable)."""
    from tests.artifacts.seaweed import SeaweedUnavailable, start_seaweed

    try:
        server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    except SeaweedUnavailable as exc:
        _missing(f"an S3 server: {exc}")
    yield server
    server.stop()
