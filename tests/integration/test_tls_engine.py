"""A node reached over TCP with mutual TLS (the second engine's TLS listener, scripts/second_engine.sh)."""

from __future__ import annotations

import pytest
from tests.integration.conftest import SECOND_ENGINE_TLS_DIR, SECOND_ENGINE_TLS_URL, wait_until
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, job

from deepdock.compute.abilities import copy_image
from deepdock.compute.base import ContainerSpec
from deepdock.compute.docker.backend import DockerBackend, TlsConfig
from deepdock.compute.docker.connection import IMAGE_TRANSFER_TIMEOUT_S, sdk_client
from deepdock.compute.testing.conformance import contract_network_name, tar_contents, wait_finished
from deepdock.errors import DeepdockError

pytestmark = pytest.mark.docker

JOB_TIMEOUT_S = 60
CA, CERT, KEY = (str(SECOND_ENGINE_TLS_DIR / f) for f in ("ca.pem", "client-cert.pem", "client-key.pem"))


@pytest.fixture
def tls_engine(second_engine) -> str:
    try:
        DockerBackend(SECOND_ENGINE_TLS_URL, tls=TlsConfig(ca=CA, cert=CERT, key=KEY)).ping()
    except DeepdockError as exc:
        pytest.fail(f"the second engine has no TLS listener ({exc.message}); restart it with "
                    "scripts/second_engine.sh stop && scripts/second_engine.sh start", pytrace=False)
    return SECOND_ENGINE_TLS_URL


def test_job_runs_on_a_tls_node_and_a_missing_client_cert_is_a_named_error(tmp_path, labelled_cleanup, tls_engine,
                                                                           busybox_image):
    # No local node: the TLS engine is the only place the job can run.
    srv = ServerProcess(tmp_path / "home", labelled_cleanup, DEEPDOCK_DOCKER_HOST="unix:///nonexistent.sock").start()
    try:
        with srv.client() as client:
            with pytest.raises(DeepdockError, match="node gpu-tls: engine tcp://127.0.0.1:23761 did not answer"):
                client.add_node("gpu-tls", tls_engine, tls_ca=CA)  # the engine demands a client certificate
            node = client.add_node("gpu-tls", tls_engine, tls_ca=CA, tls_cert=CERT, tls_key=KEY)
            assert node.status == "ready" and node.cpus > 0
            j = client.submit(job(busybox_image, "echo over tls"))
            assert wait_until(lambda: client.job(j.id).status in TERMINAL, JOB_TIMEOUT_S)
            d = client.job(j.id)
            assert d.status == "SUCCEEDED", d.status_reason
            assert d.attempt_list[0].replicas[0].node == "gpu-tls"
            assert b"".join(client.logs(j.id)) == b"over tls\n"
    finally:
        srv.stop()


def test_every_client_of_a_tls_backend_uses_its_certificates(tls_engine, busybox_image, labelled_cleanup, test_run_id):
    # Control, archive and image calls go through three clients; each must carry the TLS settings.
    tls = TlsConfig(ca=CA, cert=CERT, key=KEY)
    local, remote = DockerBackend(), DockerBackend(tls_engine, tls=tls)
    tag = f"deepdock-test-tls-copy:{test_run_id}"
    local._api.tag(busybox_image, "deepdock-test-tls-copy", test_run_id)
    network = contract_network_name()
    try:
        assert copy_image(local, remote, tag, node="gpu-tls") is True  # image client
        remote.create_network(network, labelled_cleanup)  # control client
        spec = _spec(tag, labelled_cleanup, ["sh", "-c", "mkdir -p /tmp/out && echo done > /tmp/out/result.txt"])
        cid = remote.run(spec)  # the code copy uses the archive client
        assert wait_finished(remote, cid).exit_code == 0
        assert tar_contents(remote.copy_out(cid, "/tmp/out"))[1] == {"out/result.txt": b"done\n"}  # archive client
        remote.remove(cid)
        # What build_environment builds with: a high-level client of this engine with the same TLS.
        client = sdk_client(tls_engine, tls, IMAGE_TRANSFER_TIMEOUT_S)
        assert client.ping()
        client.close()
    finally:
        remote.remove_network(network)
        for backend in (local, remote):
            try:
                backend._api.remove_image(tag)
            except Exception:  # noqa: BLE001 - cleanup: already gone is fine
                pass
        local.close()
        remote.close()


def _spec(image: str, labels: dict[str, str], command: list[str]) -> ContainerSpec:
    return ContainerSpec(name=f"deepdock-tls-{labels['deepdock.test']}", image=image, command=command, env={},
                         labels=dict(labels), cpus=0.5, memory=64 * 1024**2, pids_limit=64, shm_size=8 * 1024**2)
