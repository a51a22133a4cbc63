"""Services for real: a real server, its HAProxy gateway, real serving images and containers on two
engines (this machine's and a namespace host's), under a steady bounded load from loopback.

One module-scoped service goes through its life: deployed with two replicas spread over the two nodes,
called through the endpoint (results equal the model's own computation), bad requests refused with the
replicas still serving, a rolling update and a rollback under load with no failed request, a canary of a
bad version rolled back on its own, another project's user kept out, and deletion removing every
container."""

from __future__ import annotations

import time
from collections.abc import Iterator

import docker
import httpx
import numpy as np
import pytest
from tests.integration.server_process import ServerProcess, free_port
from tests.integration.service_kit import Load, infer_body, register_onnx_version
from tests.serving.conftest import FEATURES, MlpBundle, make_mlp_bundle

from deepdock.api.enums import RevisionStatus, ServiceStatus
from deepdock.specs.service import ServiceSpec

pytestmark = pytest.mark.docker

# The first deployment builds the ONNX runtime layer unless an earlier test did (a minute or two).
FIRST_READY_TIMEOUT_S = 600
ROLLOUT_TIMEOUT_S = 180
LOAD_INTERVAL_S = 0.01


@pytest.fixture(scope="module")
def served(netns_hosts, tmp_path_factory) -> Iterator[tuple[ServerProcess, dict[int, MlpBundle], str]]:
    labels = {"deepdock.test": "services"}
    gateway_port = free_port()
    home = tmp_path_factory.mktemp("services") / "home"
    srv = ServerProcess(home, labels, DEEPDOCK_GATEWAY_PORT=str(gateway_port), DEEPDOCK_PYTORCH_INDEX_URL="",
                        DEEPDOCK_ROLLOUT_INTERVAL_S="0.5").start()
    bundles = {}
    try:
        with srv.client() as c:
            host = netns_hosts[0]
            c.add_node(host.name, host.engine_url)
            for seed in (1, 2):
                bundle = make_mlp_bundle(tmp_path_factory.mktemp(f"v{seed}"), seed=seed)
                bundles[register_onnx_version(home, bundle.folder / "model.onnx")] = bundle
        yield srv, bundles, f"http://127.0.0.1:{gateway_port}"
    finally:
        srv.stop()
        for url in [None, netns_hosts[0].engine_url]:
            client = docker.DockerClient(base_url=url, timeout=60) if url else docker.from_env(timeout=60)
            for container in client.containers.list(all=True, filters={"label": "deepdock.managed=true"}):
                if container.labels.get("deepdock.test") == "services" or url:
                    container.remove(force=True)
            for network in client.networks.list(filters={"label": "deepdock.test=services"}):
                network.remove()
            client.close()


def _wait(c, name: str, timeout_s: float, done) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        s = c.service(name)
        if done(s):
            return s
        assert s.status != ServiceStatus.FAILED, s
        assert time.monotonic() < deadline, s
        time.sleep(0.25)


def _serving(revision: int, replicas: int = 2):  # type: ignore[no-untyped-def]
    return lambda s: (s.stable_revision == s.target_revision == revision and s.status == ServiceStatus.READY
                      and s.ready_replicas == replicas and len(s.replicas) == replicas)


def test_a_service_lives_through_updates_rollbacks_and_a_bad_canary(served):
    srv, bundles, gateway = served
    x = np.random.default_rng(7).normal(size=(1, FEATURES)).astype(np.float32)
    url = f"{gateway}/services/digits/v2/models/digits-mlp/infer"
    with srv.client() as c:
        spec = ServiceSpec.model_validate({"name": "digits", "model": "digits-mlp:1", "replicas": 2,
                                           "resources": {"cpus": 0.5, "memory": "512m"}})
        started = time.monotonic()
        c.apply_service(spec)
        s = _wait(c, "digits", FIRST_READY_TIMEOUT_S, _serving(1))
        print(f"first deployment ready in {time.monotonic() - started:.1f}s")
        assert {r.node for r in s.replicas} == {"local", "ddh1"}  # spread over the two engines
        assert s.endpoint == f"{gateway}/services/digits"

        # through the endpoint: the model's own numbers; no token, another's token, bad input
        out = c.infer(s.endpoint, "digits-mlp", infer_body(x))
        assert np.allclose(out["outputs"][0]["data"], bundles[1].reference(x)[0], atol=1e-5)
        assert httpx.post(url, json=infer_body(x)).status_code == 401
        bad = httpx.post(url, json=infer_body(x[:, :3]), headers={"Authorization": f"Bearer {c.token}"})
        assert bad.status_code == 400 and "the model takes float32 of shape [-1, 64]" in bad.text
        outsider = c.create_user("mallory", projects=["other"]).token
        assert outsider is not None
        assert httpx.post(url, json=infer_body(x), headers={"Authorization": f"Bearer {outsider}"}).status_code == 401

        # a rolling update and a rollback under load: not one failed request
        with Load(url, c.token, infer_body(x), interval_s=LOAD_INTERVAL_S) as load:
            c.update_service("digits", model="digits-mlp:2")
            _wait(c, "digits", ROLLOUT_TIMEOUT_S, _serving(2))
            time.sleep(1)
            c.rollback_service("digits")
            _wait(c, "digits", ROLLOUT_TIMEOUT_S, _serving(1))
            time.sleep(1)
        assert load.failed == [] and load.ok > 100, (load.ok, load.failed[:5])
        references = {v: bundles[v].reference(x)[0] for v in (1, 2)}
        answered_by = [{v for v, ref in references.items() if np.allclose(o, ref, atol=1e-5)} for o in load.outputs]
        assert all(len(versions) == 1 for versions in answered_by)  # every answer is one version's own
        assert set().union(*answered_by) == {1, 2}  # and both versions answered

        # a canary of a version that breaks its SLO (p99 above 1 ms is impossible to keep) is rolled back
        with Load(url, c.token, infer_body(x), interval_s=LOAD_INTERVAL_S) as load:
            started = time.monotonic()
            c.apply_service(ServiceSpec.model_validate({
                **spec.model_dump(mode="json"), "model": "digits-mlp:2",
                "rollout": {"canary": {"steps": [50], "interval": 30}, "slo": {"max_p99_ms": 0.01, "min_requests": 20}}}))
            s = _wait(c, "digits", ROLLOUT_TIMEOUT_S,
                      lambda s: any(r.status == RevisionStatus.FAILED for r in s.revisions[-1:]))
            took = time.monotonic() - started
            _wait(c, "digits", ROLLOUT_TIMEOUT_S, _serving(1))
        assert took < 60, took
        assert "p99 latency" in s.revisions[-1].reason
        assert load.failed == [], load.failed[:5]

        # deletion: every replica container goes
        c.delete_service("digits")
        deadline = time.monotonic() + 60
        local = docker.from_env()
        while local.containers.list(all=True, filters={"label": "deepdock.test=services"}):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert httpx.post(url, json=infer_body(x), headers={"Authorization": f"Bearer {c.token}"}).status_code in (
            404, 503)
