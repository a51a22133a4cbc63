"""A node reached over TCP with mutual TLS (the second engine's TLS listener, scripts/second_engine.sh)."""

from __future__ import annotations

import pytest
from tests.integration.conftest import SECOND_ENGINE_TLS_DIR, SECOND_ENGINE_TLS_URL
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, job, wait_status

from deepdock.compute.docker.backend import DockerBackend, TlsConfig
from deepdock.errors import DeepdockError

pytestmark = pytest.mark.docker

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
            assert node["status"] == "ready" and node["cpus"] > 0
            j = client.submit(job(busybox_image, "echo over tls"))
            d = wait_status(client, j["id"], TERMINAL)
            assert d["status"] == "SUCCEEDED", d["status_reason"]
            assert d["attempt_list"][0]["replicas"][0]["node"] == "gpu-tls"
            assert b"".join(client.logs(j["id"])) == b"over tls\n"
    finally:
        srv.stop()
