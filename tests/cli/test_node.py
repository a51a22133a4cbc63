"""``deepdock node add | ls | drain | rm``."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Invoke
from tests.cli.fakeapi import FakeApi, node_body


def _row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"│ {name} "))


def test_node_ls_shows_capacity_allocation_and_status(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/nodes", [
        node_body(),
        node_body(name="b", engine_url="tcp://b:2376", status="unreachable", last_error="connection refused", gpus=[]),
    ])
    result = cli("node", "ls")
    assert result.exit_code == 0, result.output
    local = _row(result.stdout, "local")
    assert "ready" in local and "2/8" in local and "2.0GiB/16.0GiB" in local
    assert "0 used of [0:A100 80.0GiB]" in local and "default" in local
    b = _row(result.stdout, "b")
    assert "unreachable (connection refused)" in b and "0 used of [0]" in b and "tcp://b:2376" in b
    assert "draining" not in result.stdout


@pytest.mark.parametrize(("body", "shown"), [
    ({"status": "draining"}, "│ draining "),  # an older server: only the status says it
    ({"status": "draining", "health": "ready", "draining": True}, "│ draining "),
    # Drained and then lost: the status is the health, the drain is still the admin's decision.
    ({"status": "unreachable", "health": "unreachable", "draining": True}, "│ unreachable, draining "),
])
def test_node_ls_shows_draining(api: FakeApi, cli: Invoke, body: dict[str, object], shown: str) -> None:
    api.on("GET", "/nodes", [node_body(name="c", **body)])
    result = cli("node", "ls")
    assert result.exit_code == 0, result.output
    assert shown in _row(result.stdout, "c")


def test_node_add_registers_the_engine_with_its_labels(api: FakeApi, cli: Invoke) -> None:
    api.on("POST", "/nodes", node_body(name="b", engine_url="tcp://b:2376"), status=201)
    result = cli("node", "add", "b", "--engine", "tcp://b:2376", "--tls-ca", "/ca.pem",
                 "--label", "zone=a", "--label", "gpu=a100")
    assert result.exit_code == 0, result.output
    assert result.stdout == "node b added: 8 CPUs, 16.0GiB, 1 GPU(s)\n"
    assert api.json_sent("POST", "/nodes") == {"name": "b", "engine_url": "tcp://b:2376", "tls_ca": "/ca.pem",
                                               "tls_cert": None, "tls_key": None,
                                               "labels": {"zone": "a", "gpu": "a100"}, "address": ""}


def test_node_add_error_is_one_line(api: FakeApi, cli: Invoke) -> None:
    api.error("POST", "/nodes", 502, "engine_error", "node b: engine tcp://b:2376 did not answer")
    result = cli("node", "add", "b", "--engine", "tcp://b:2376")
    assert result.exit_code == 1
    assert result.stderr == "error: node b: engine tcp://b:2376 did not answer\n"


@pytest.mark.parametrize(("args", "sent"), [((), "draining"), (("--undo",), "ready")])
def test_node_drain(api: FakeApi, cli: Invoke, args: tuple[str, ...], sent: str) -> None:
    api.on("PATCH", "/nodes/b", node_body(name="b", status=sent))
    result = cli("node", "drain", "b", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"node b: {sent}\n"
    assert api.json_sent("PATCH", "/nodes/b") == {"status": sent}


@pytest.mark.parametrize(("args", "force"), [((), "false"), (("--force",), "true")])
def test_node_rm(api: FakeApi, cli: Invoke, args: tuple[str, ...], force: str) -> None:
    api.on("DELETE", "/nodes/b", status=204)
    result = cli("node", "rm", "b", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == "node b removed\n"
    assert api.requests[0].url.params["force"] == force


def test_node_rm_with_jobs_there_is_refused(api: FakeApi, cli: Invoke) -> None:
    api.error("DELETE", "/nodes/b", 409, "conflict", "node b runs 2 jobs; stop them or pass --force")
    result = cli("node", "rm", "b")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: node b runs 2 jobs; stop them or pass --force\n"


def test_node_gpus_shows_readings_holders_and_missing_readings(api: FakeApi, cli: Invoke) -> None:
    gib = 1024**3
    api.on("GET", "/nodes", [
        node_body(name="g", gpus=[
            {"index": 0, "uuid": "GPU-0", "model": "H100", "memory": 80 * gib, "utilization_percent": 93.0,
             "memory_used": 40 * gib, "temperature_c": 61.0, "power_w": 450.5, "sampled_at": 1.0,
             "holders": [{"job": "abc123", "project": "vision", "share": 1.0}]},
            {"index": 1, "uuid": "GPU-1", "model": "H100", "memory": 80 * gib,
             "holders": [{"job": "", "project": "", "share": 0.5}]}]),
        node_body(name="cpu-only", gpus=[]),
    ])
    result = cli("node", "gpus")
    assert result.exit_code == 0, result.output
    first, second = [line for line in result.stdout.splitlines() if line.startswith("│ g ")]
    assert "93%" in first and "40.0GiB/80.0GiB" in first and "61°C" in first and "450.5 W" in first
    assert "abc123" in first
    # Not sampled yet: no made-up zeros; another project's job is unnamed.
    assert "-/80.0GiB" in second and "(another project) ×0.5" in second
    assert "cpu-only" not in result.stdout
    assert cli("node", "gpus", "cpu-only").stdout.strip() == "no GPUs on node cpu-only"
    missing = cli("node", "gpus", "nope")
    assert missing.exit_code == 1 and "no node 'nope'" in missing.stdout
