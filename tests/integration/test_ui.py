"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real server and
Docker engine: log in, watch a running job's loss curve grow, read a pending job's reason, stop it, move
and roll back a model alias, see a service's traffic split; every page is screenshotted into docs/ui/
(docs/ui.md shows them). No page may log a JavaScript error."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import _missing
from tests.integration.conftest import give_fake_gpus, take_fake_gpus
from tests.integration.server_process import ServerProcess, free_port
from tests.integration.service_kit import FEATURES, infer_body, register_onnx_version
from tests.integration.test_server_jobs import wait_status

from deepdock.specs.job import JobSpec
from deepdock.specs.service import ServiceSpec

pytestmark = pytest.mark.docker

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "ui"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# Logs a loss every 0.2 s for 2 minutes (the test stops it sooner): the SDK is in every job's image.
TRAINING = ("import time\nfrom deepdock import sdk\nfor step in range(600):\n"
            "    sdk.log_metrics(step, loss=1.0 / (step + 1))\n    if sdk.should_stop():\n        break\n"
            "    time.sleep(0.2)\n")
UI_TIMEOUT_MS = 20_000
USAGE_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install -e '.[dev]')")
    if chromium is None:
        _missing("Chromium (apt-get install chromium; scripts/install.sh does)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=chromium, headless=True,
                                                       args=CHROMIUM_FLAGS, viewport={"width": 1360, "height": 900})
        yield context
        context.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, docker_client, second_engine, busybox_image) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    from tests.serving.conftest import make_mlp_bundle

    root = tmp_path_factory.mktemp("ui")
    give_fake_gpus()
    srv = ServerProcess(root / "home", {"deepdock.test": "ui"}, DEEPDOCK_TRACKING_INTERVAL_S="0.2",
                        DEEPDOCK_USAGE_INTERVAL_S="1", DEEPDOCK_GATEWAY_PORT=str(free_port()),
                        DEEPDOCK_GPU_PROBE_IMAGE=busybox_image).start()
    try:
        with srv.client() as c:
            node = c.nodes()[0]
            # A GPU node (the second engine with the tests' fake NVIDIA toolkit) where a job holds a GPU;
            # then drained, so that everything else below runs on the local node as before.
            c.add_node("gpu", second_engine)
            gpu_job = c.run(JobSpec.model_validate({
                "name": "ui-gpu", "image": busybox_image, "command": ["sleep", "600"],
                "resources": {"cpus": 0.1, "memory": "16m", "gpus": 1}}))
            wait_status(c, gpu_job.id, {"RUNNING"}, timeout_s=60)
            c.drain_node("gpu")
            running = c.run(JobSpec.model_validate({
                "name": "ui-train", "image": "python:3.11-slim-bookworm", "command": ["python", "-c", TRAINING],
                "resources": {"cpus": 0.5, "memory": "256m"}}))
            wait_status(c, running.id, {"RUNNING"}, timeout_s=120)
            deadline = time.monotonic() + USAGE_TIMEOUT_S
            while not c.job(running.id).usage:  # the usage step's first sample of its container
                assert time.monotonic() < deadline, "no usage sample of the running job"
                time.sleep(0.5)
            # The whole node while the training holds part of it: it waits, with the scheduler's reason.
            pending = c.run(JobSpec.model_validate({
                "name": "ui-wait", "image": "python:3.11-slim-bookworm", "command": ["sleep", "1"],
                "resources": {"cpus": node.cpus, "memory": "128m"}}))
            for seed in (1, 2):
                register_onnx_version(srv.home, make_mlp_bundle(root / f"v{seed}", seed=seed).folder / "model.onnx")
            c.set_alias("digits-mlp", "production", 1)
            c.apply_service(ServiceSpec.model_validate({"name": "digits", "model": "digits-mlp:1", "replicas": 1,
                                                        "resources": {"cpus": 0.25, "memory": "256m"}}))
            yield {"server": srv, "token": c.token, "running": running.id, "pending": pending.id,
                   "gpu_job": gpu_job.id}
            c.delete_service("digits")
            for job in (running.id, pending.id, gpu_job.id):
                c.stop(job)
    finally:
        take_fake_gpus()
        srv.stop()
        for container in docker_client.containers.list(all=True, filters={"label": "deepdock.test=ui"}):
            container.remove(force=True)


@pytest.fixture(scope="module")
def page(browser, cluster) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{cluster['server'].url}/")
    page.wait_for_url("**/ui/#/login")
    page.fill("#token", "not-a-token")
    page.click("#login button")
    page.wait_for_selector("#login-error:has-text('not accepted')")
    page.fill("#token", cluster["token"])
    page.click("#login button")
    page.wait_for_selector("#nodes-ready")
    # From here on (the refused token above logged its 401), any error on a page fails the module.
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    assert not errors, errors


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_overview_shows_capacity_jobs_and_services(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/overview")
    page.wait_for_selector("[data-status=RUNNING]")
    assert page.inner_text("#nodes-ready") == "2 / 2"  # the local engine and the (drained) GPU node: healthy
    shot(page, "overview")


def test_jobs_page_lists_and_filters(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/jobs")
    page.wait_for_selector(f"tr[data-job='{cluster['running']}']")
    assert page.locator(f"tr[data-job='{cluster['pending']}']").count() == 1
    shot(page, "jobs")
    page.goto(f"{cluster['server'].url}/ui/#/jobs?status=RUNNING")
    page.wait_for_selector(f"tr[data-job='{cluster['running']}']")
    assert page.locator(f"tr[data-job='{cluster['pending']}']").count() == 0
    page.goto(f"{cluster['server'].url}/ui/#/jobs?user=admin")
    page.wait_for_selector(f"tr[data-job='{cluster['pending']}']")
    page.goto(f"{cluster['server'].url}/ui/#/jobs?user=nobody")
    page.wait_for_function("document.querySelector('input[name=user]')?.value === 'nobody'"
                           " && document.getElementById('app').dataset.ready === 'jobs'")
    assert page.locator("tr[data-job]").count() == 0


def test_a_running_jobs_loss_curve_grows_live(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/jobs/{cluster['running']}")
    canvas = page.wait_for_selector("canvas[data-metric=loss]")
    first = int(canvas.get_attribute("data-last-step"))
    page.wait_for_function(f"Number(document.querySelector('canvas[data-metric=loss]').dataset.lastStep) > {first + 3}")
    page.wait_for_selector("#logs")
    assert "CPU" in page.inner_text("#usage [data-usage=local]")
    # The container's use over time, from the usage history (a sample a second here): the chart grows.
    page.wait_for_function("Number(document.querySelector('canvas[data-usage-chart=cpu]').dataset.points) >= 2",
                           timeout=30_000)
    assert int(page.get_attribute("canvas[data-usage-chart=memory]", "data-points")) >= 2
    shot(page, "job")



def test_the_usage_history_is_read_through_the_client(cluster) -> None:  # type: ignore[no-untyped-def]
    with cluster["server"].client() as c:
        deadline = time.monotonic() + USAGE_TIMEOUT_S
        while len(c.job_usage(cluster["running"])) < 2:
            assert time.monotonic() < deadline, "the usage history of the running job did not grow"
            time.sleep(0.5)
        history = c.job_usage(cluster["running"])
        assert {(u.rank, u.node) for u in history} == {(0, "local")}
        assert all(u.memory_usage > 0 and u.memory_limit == 256 * 1024**2 for u in history)
        assert history == sorted(history, key=lambda u: u.at)
        assert c.job_usage(cluster["running"], since=history[-1].at) == []
        node = [n for n in c.node_usage() if n.node == "local"]
        assert len(node) >= 2 and all(n.containers >= 1 for n in node)

def test_a_pending_job_says_why_and_can_be_stopped(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/jobs/{cluster['pending']}")
    reason = page.wait_for_selector("#pending-reason")
    assert "queue position" in reason.inner_text()
    shot(page, "job-pending")
    page.click("#stop")
    page.wait_for_selector("#job-status [data-status=STOPPED]")


def test_nodes_and_projects(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/nodes")
    page.wait_for_selector("[data-node=local] [data-usage=local]")
    page.wait_for_function("Number(document.querySelector('canvas[data-node-usage=local]').dataset.points) >= 2",
                           timeout=30_000)
    # The GPU node: each device's last reading from its NVIDIA tools, the job holding one, a chart per device.
    page.wait_for_selector("[data-node=gpu] .gpu[data-gpu='0'][data-util='97']")
    page.wait_for_function("Number(document.querySelector('canvas[data-gpu-usage=gpu]').dataset.points) >= 4",
                           timeout=30_000)
    held = page.locator("[data-node=gpu] .gpu[data-used='1']")
    assert held.count() == 1 and cluster["gpu_job"] in (held.get_attribute("title") or "")
    assert "97% util" in page.inner_text("[data-node=gpu] .gpu[data-gpu='0']").replace("\n", " ")
    shot(page, "nodes")
    # The GPU job's own page says which device it holds and what that device is doing.
    page.goto(f"{cluster['server'].url}/ui/#/jobs/{cluster['gpu_job']}")
    page.wait_for_selector("#held-gpus [data-held-gpu^='gpu/']:has-text('busy')")
    page.goto(f"{cluster['server'].url}/ui/#/projects")
    page.wait_for_selector("td:has-text('default')")
    shot(page, "projects")


def test_move_and_roll_back_a_model_alias(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/models/digits-mlp")
    page.wait_for_selector("tr[data-alias=production] .alias-version:has-text('1')")
    page.fill("#move input[name=version]", "2")
    page.click("#move button")
    page.wait_for_selector("tr[data-alias=production] .alias-version:has-text('2')")
    page.click("button[data-rollback=production]")
    page.wait_for_selector("tr[data-alias=production] .alias-version:has-text('1')")
    assert "rollback 2 → 1" in page.inner_text("tr[data-alias=production]")
    shot(page, "model")


def test_a_services_traffic_split(page, cluster) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{cluster['server'].url}/ui/#/services/digits")
    page.wait_for_selector("#traffic .split:has-text('r1 100%')", timeout=180_000)
    with cluster["server"].client() as c:
        url = f"{c.service('digits').endpoint}/v2/models/digits-mlp/infer"
    body = infer_body(np.zeros((1, FEATURES), np.float32))
    with httpx.Client(headers={"Authorization": f"Bearer {cluster['token']}"}) as http, \
            cluster["server"].client() as c:
        deadline = time.monotonic() + 60
        # Through the gateway (what its log measures and the charts show) until a sample counted them.
        while not any(s.requests for s in c.service_samples("digits")):
            assert time.monotonic() < deadline, "no traffic sample"
            assert http.post(url, json=body).status_code == 200
            time.sleep(0.05)
    page.wait_for_function("Number(document.querySelector('canvas[data-metric=rps]')?.dataset.points) > 1",
                           timeout=30_000)
    shot(page, "service")
    page.goto(f"{cluster['server'].url}/ui/#/services")
    page.wait_for_selector("td a:has-text('digits')")
    shot(page, "services")
    page.goto(f"{cluster['server'].url}/ui/#/overview")  # the overview's request rate, from the same samples
    page.wait_for_function("(document.querySelector('[data-rps=digits]')?.textContent || '—') !== '—'")
