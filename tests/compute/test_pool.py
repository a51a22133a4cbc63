"""BackendPool: one backend per node, by the kind of its engine URL, rebuilt when the connection changes."""

from __future__ import annotations

import pytest

from deepdock.compute.docker import DockerBackend
from deepdock.compute.pool import KIND_DOCKER, KIND_FAKE, BackendPool, NodeConnection, node_kind
from deepdock.compute.testing.fake import FakeBackend
from deepdock.errors import SpecError


class Recorder:
    def __init__(self) -> None:
        self.made: list[FakeBackend] = []

    def __call__(self, conn: NodeConnection) -> FakeBackend:
        backend = FakeBackend(engine_url=conn.engine_url)
        self.made.append(backend)
        return backend


@pytest.mark.parametrize(("url", "kind"), [
    ("fake://n1", KIND_FAKE), ("", KIND_DOCKER), ("unix:///var/run/docker.sock", KIND_DOCKER),
    ("tcp://gpu-01:2376", KIND_DOCKER),
])
def test_kind_is_the_url_scheme(url, kind):
    assert node_kind(url) == kind == NodeConnection("n", url).kind


def test_reused_then_rebuilt_and_closed_when_the_connection_changes():
    made = Recorder()
    pool = BackendPool({KIND_FAKE: made})
    first = pool.get(NodeConnection("n1", "fake://a"))
    assert pool.get(NodeConnection("n1", "fake://a")) is first
    second = pool.get(NodeConnection("n1", "fake://b"))
    assert second is not first and second.engine_url == "fake://b"
    with pytest.raises(Exception, match="closed"):
        first.ping()
    pool.forget("n1")
    with pytest.raises(Exception, match="closed"):
        second.ping()
    third = pool.get(NodeConnection("n2", "fake://c"))
    pool.close()
    with pytest.raises(Exception, match="closed"):
        third.ping()


def test_unknown_kind_is_a_spec_error_naming_the_node():
    with pytest.raises(SpecError, match="node n1: no backend for engines of kind 'fake'"):
        BackendPool().get(NodeConnection("n1", "fake://x"))


def test_docker_nodes_get_a_docker_backend_with_their_tls_and_no_request(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a request is made\n")
    pool = BackendPool()
    backend = pool.get(NodeConnection("n1", "tcp://gpu-01.invalid:2376", tls_ca=str(ca)))
    assert isinstance(backend, DockerBackend)
    assert backend.engine_url == "tcp://gpu-01.invalid:2376" and backend.tls is not None
    assert backend.tls.ca == str(ca)
    pool.close()
