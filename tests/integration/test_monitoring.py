"""The shipped monitoring (deploy/monitoring/) against a real Prometheus: it scrapes a real server (jobs,
a queue, a node, a service in its database, and a GPU node - the second engine with the tests' fake
NVIDIA toolkit - where a job holds a GPU) and a real gateway (HAProxy's exporter in front of a replica
that answers some requests with 500); every query of the Grafana dashboard and every alert rule's
measure returns data, the rules load without error, and promtool accepts the files as shipped."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.conftest import _missing
from tests.gateway.conftest import Replica
from tests.integration.conftest import give_fake_gpus, take_fake_gpus
from tests.integration.server_process import ServerProcess, free_port
from tests.integration.service_kit import register_onnx_version

from deepdock.api.enums import JobStatus
from deepdock.gateway.haproxy import Gateway
from deepdock.gateway.routes import Backend, Route
from deepdock.server.db.session import Database
from deepdock.settings import Settings
from deepdock.specs.job import JobSpec
from deepdock.specs.service import ServiceSpec

pytestmark = pytest.mark.docker

MONITORING = Path(__file__).parents[2] / "deploy" / "monitoring"
PROMETHEUS_START_S = 30
QUERY_TIMEOUT_S = 60
MIB = 1024**2
# The dashboard's variables, as Grafana would fill them.
VARIABLES = {"$__rate_interval": "1m", "$project": ".*"}
COMPARISON = re.compile(r"^(?P<measure>.*\S)\s+(==|!=|>=|<=|>|<)\s+[-+0-9.e]+$", re.S)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        _missing(f"{name} (apt-get install prometheus; scripts/install.sh does)")
    return found  # type: ignore[return-value]


def test_promtool_accepts_the_shipped_files() -> None:
    promtool = _binary("promtool")
    for args in (["check", "config", str(MONITORING / "prometheus.yml")],
                 ["check", "rules", str(MONITORING / "alerts.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def _fill(home: Path) -> None:
    """What a working cluster has: jobs that ran, failed and wait, and a service (with no replica)."""
    from tests.server.factories import make_job, make_project, make_user
    from tests.serving.conftest import make_mlp_bundle

    db = Database(Settings(home=home).db_url)
    now = time.time()
    with db.session() as session:
        user = make_user(session)
        project = make_project(session, "default", members=[user])
        make_job(session, user, project, status=JobStatus.SUCCEEDED, submitted_at=now - 300, started_at=now - 290)
        make_job(session, user, project, status=JobStatus.FAILED, submitted_at=now - 200, started_at=now - 199)
        # Waits: more CPUs than any node has (the scheduler keeps it queued with its reason).
        make_job(session, user, project, status=JobStatus.QUEUED, submitted_at=now - 60, resources={"cpus": 64})
        session.commit()
    db.dispose()
    bundle = make_mlp_bundle(home.parent / "bundle")
    register_onnx_version(home, bundle.folder / "model.onnx")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, docker_client, second_engine,  # type: ignore[no-untyped-def]
              busybox_image) -> Iterator[tuple[str, ServerProcess, str]]:
    """Prometheus's URL, the server it scrapes, and the job that holds a GPU there."""
    prometheus = _binary("prometheus")
    root = tmp_path_factory.mktemp("monitoring")
    give_fake_gpus()
    srv = ServerProcess(root / "home", {"deepdock.test": "monitoring"}, DEEPDOCK_GPU_PROBE_IMAGE=busybox_image,
                        DEEPDOCK_USAGE_INTERVAL_S="1").start()
    replica, gateway, process, gpu_job = Replica("a"), None, None, None
    try:
        _fill(srv.home)
        with srv.client() as c:
            c.apply_service(ServiceSpec.model_validate({"name": "digits", "model": "digits-mlp:1", "replicas": 0}))
            c.jobs()  # API traffic for the latency histogram
            c.add_node("gpu", second_engine)
            gpu_job = c.submit(JobSpec.model_validate({
                "name": "holds-a-gpu", "image": busybox_image, "command": ["sleep", "300"],
                "resources": {"cpus": 0.1, "memory": "16m", "gpus": 1}})).id
        metrics_port = free_port()
        gateway = Gateway(root / "gateway", port=free_port(), log_port=free_port(), metrics_port=metrics_port)
        gateway.start()
        gateway.apply([Route("digits", "digits", (Backend("r1-a", "127.0.0.1", replica.port, 100, 1),),
                             frozenset({hashlib.sha256(b"caller").hexdigest()}))])
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{srv.port}"]}]
        config["scrape_configs"][1]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(MONITORING / "alerts.yml", root / "alerts.yml")
        port = free_port()
        process = subprocess.Popen(
            [prometheus, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(root / "prometheus.log").open("wb"))
        url = f"http://127.0.0.1:{port}"
        _until(lambda: _targets_up(url) == 2, PROMETHEUS_START_S, "both targets up")
        # Traffic through the gateway: three answers, one of them a 500 (the error-rate measures).
        with httpx.Client() as client:
            for status in (200, 500, 200):
                replica.status = status
                client.get(f"{gateway.url}/services/digits/", headers={"Authorization": "Bearer caller"})
        yield url, srv, gpu_job
    finally:
        if gpu_job is not None:
            with srv.client() as c:
                c.stop(gpu_job)
                _until(lambda: c.job(gpu_job).status == JobStatus.STOPPED, 30, "the GPU job stopped")
        take_fake_gpus()
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        if gateway is not None:
            gateway.stop()
        replica.kill()
        srv.stop()


@pytest.fixture(scope="module")
def scraped(monitored: tuple[str, ServerProcess, str]) -> str:
    return monitored[0]


def test_gpu_readings_reach_the_nodes_list_the_history_and_the_cli(monitored) -> None:  # type: ignore[no-untyped-def]
    _, srv, gpu_job = monitored
    with srv.client() as c:
        node = _until(lambda: next((n for n in c.nodes() if n.name == "gpu" and n.gpus[0].sampled_at), None),
                      QUERY_TIMEOUT_S, "a GPU sample of the GPU node")
        assert [(g.index, g.utilization_percent, g.memory_used, g.power_w) for g in node.gpus] == [
            (0, 97.0, 61440 * MIB, 512.32), (1, 0.0, 4 * MIB, 69.75)]
        assert [h.job for g in node.gpus for h in g.holders] == [gpu_job]
        assert [(s.index, s.utilization_percent[-1]) for s in c.gpu_usage(node="gpu", max_points=10)] == [
            (0, 97.0), (1, 0.0)]
    env = {**os.environ, "DEEPDOCK_SERVER_URL": srv.url, "DEEPDOCK_HOME": str(srv.home), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "deepdock.cli.main", "node", "gpus", "gpu"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("│")[2].strip(): line for line in done.stdout.splitlines() if line.startswith("│ gpu ")}
    assert "97%" in rows["0"] and "60.0GiB/79.6GiB" in rows["0"] and "512.32 W" in rows["0"]
    assert gpu_job in rows["0"] + rows["1"]
    # The job's own view: the device it holds and what that device is doing.
    with srv.client() as c:
        (held,) = c.job(gpu_job).held_gpus
        assert held.node == "gpu" and held.sampled_at is not None
        assert held.utilization_percent == {0: 97.0, 1: 0.0}[held.index]
    done = subprocess.run([sys.executable, "-m", "deepdock.cli.main", "describe", gpu_job], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"rank 0 on gpu, GPU {held.index}: {held.utilization_percent:g}% busy" in done.stdout


def _targets_up(url: str) -> int:
    try:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
    except (httpx.HTTPError, KeyError, ValueError):
        return 0
    return sum(t["health"] == "up" for t in targets)


def _until(condition, timeout_s: float, what: str) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g}s"
        time.sleep(0.5)


def _result(url: str, query: str) -> list[Any]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
    assert answer["status"] == "success", (query, answer)
    return answer["data"]["result"]  # type: ignore[no-any-return]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 15 and all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    return queries


def _fill_variables(query: str) -> str:
    for name, value in VARIABLES.items():
        query = query.replace(name, value)
    return query


@pytest.mark.parametrize("query", _dashboard_queries())
def test_every_dashboard_query_returns_data(scraped: str, query: str) -> None:
    _until(lambda: _result(scraped, _fill_variables(query)), QUERY_TIMEOUT_S, f"data for {query}")


def _alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_measure_returns_data(scraped: str, rule: dict[str, Any]) -> None:
    match = COMPARISON.match(rule["expr"].strip())
    assert match, f"{rule['alert']}: not '<measure> <comparison> <threshold>'"
    _until(lambda: _result(scraped, match["measure"]), QUERY_TIMEOUT_S, f"data for {rule['alert']}")


def test_the_rules_load_and_evaluate(scraped: str) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = httpx.get(f"{scraped}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else []

    rules = _until(evaluated, QUERY_TIMEOUT_S, "evaluated rules")
    assert {r["name"] for r in rules} == {r["alert"] for r in _alert_rules()}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    # The service wants no replica, so it is not degraded; a node is up, so none is down.
    assert {r["name"]: r["state"] for r in rules}["DeepdockNodeDown"] == "inactive"
