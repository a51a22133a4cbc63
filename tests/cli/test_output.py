"""What every command shares: one red ``error:`` line and exit 1 for a server error, the named error
for a server that does not answer, and ``deepdock demo`` on the shared log-following loop."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from deepdock.cli import demo, output
from deepdock.client import Client
from deepdock.settings import Settings
from tests.cli.conftest import Invoke
from tests.cli.fakeapi import FakeApi, detail_body, job_body

RED = "\x1b[31m"


@pytest.mark.parametrize("args", [("ps",), ("describe", "j-1"), ("stop", "j-1"), ("logs", "j-1"), ("node", "ls"),
                                  ("project", "ls")])
def test_a_server_error_is_one_red_error_line_and_exit_1(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch,
                                                         args: tuple[str, ...]) -> None:
    for method, path in [("GET", "/jobs"), ("GET", "/jobs/j-1"), ("POST", "/jobs/j-1/stop"),
                         ("GET", "/jobs/j-1/logs"), ("GET", "/nodes"), ("GET", "/projects")]:
        api.error(method, path, 401, "unauthenticated", "invalid or expired token")
    terminal = io.StringIO()
    monkeypatch.setattr(output, "err_console", Console(file=terminal, force_terminal=True, color_system="standard"))
    result = cli(*args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{RED}error:") and lines[0].endswith("invalid or expired token")


def test_the_error_line_without_a_terminal_is_plain(api: FakeApi, cli: Invoke) -> None:
    api.error("GET", "/jobs/nope", 404, "not_found", "no job nope")
    result = cli("describe", "nope")
    assert (result.exit_code, result.stderr) == (1, "error: no job nope\n")


def test_a_body_from_a_newer_server_that_does_not_parse_is_one_error_line(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs", [job_body(status="HIBERNATING")])
    result = cli("ps")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: the server at http://deepdock.test answered GET /api/v1/jobs with a body")
    assert len(result.stderr.splitlines()) == 1


def test_a_server_that_does_not_answer_says_how_to_start_one(cli: Invoke, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(output, "client_factory", lambda: Client("http://127.0.0.1:1", "t", settings=Settings(home=tmp_path),
                                                                 transport=httpx.MockTransport(refuse)))
    result = cli("ps")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: deepdock server at http://127.0.0.1:1 did not answer")
    assert "start it with `deepdock server`" in result.stderr


def _version_body(version: int = 1, **extra: object) -> dict[str, object]:
    return {"model": "digits-mlp", "project": "default", "version": version, "job": "j-d", "attempt": 1,
            "lineage": {"job": "j-d", "job_name": "demo-digits", "attempt": 1, "image": "deepdock/env:abc",
                        "image_digest": "sha256:" + "1" * 64, "env_lock": "2" * 64, "code_sha256": "ef" * 32, "data": []},
            "params": {"lr": 0.003}, "metrics": {"loss": 0.05}, "signature": {"inputs": [
                {"name": "input", "dtype": "float32", "shape": [-1, 64]}], "outputs": []},
            "files": [{"path": "model.pt", "size": 10, "sha256": "3" * 64}], "formats": {}, "aliases": [],
            "created_by": "admin", "created_at": 1.0, **extra}


def test_demo_trains_tracks_registers_exports_and_promotes(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    built: list[str] = []
    served: list[tuple[str, str]] = []
    monkeypatch.setattr(demo, "_prebuild", lambda spec: built.append(spec.name))
    # The serving end calls the gateway's endpoint itself: tested for real in tests/integration
    # (test_model_lifecycle runs the whole demo); here, that it runs after production is set.
    monkeypatch.setattr(demo, "serve_and_roll", lambda c, model, job, spec: served.append((model, job)))
    api.error("GET", "/services/digits", 404, "not_found", "no service digits")
    done = detail_body(id="j-d", status="SUCCEEDED", status_reason="exited with code 0", artifacts_dir=str(tmp_path))
    api.on("GET", "/me", {"name": "admin", "is_admin": True})
    api.on("POST", "/code", {"sha256": "ef" * 32, "size": 1}, status=201)
    api.on("POST", "/jobs", job_body(id="j-d", status="QUEUED"), status=201)
    api.on("GET", "/jobs/j-d", detail_body(id="j-d", status="RUNNING", attempts=1))
    api.on("GET", "/jobs/j-d", done)
    api.on("GET", "/jobs/j-d/logs", content=b"epoch 1\ntest_accuracy=0.9700\n")
    api.on("GET", "/jobs/j-d/params", {"job": "j-d", "params": {"lr": 0.003}})
    api.on("GET", "/jobs/j-d/metrics", {"job": "j-d", "series": [
        {"name": "loss", "value": 0.05, "step": 880, "attempt": 1, "count": 880}]})
    api.on("GET", "/jobs/j-d/metrics/loss", {"job": "j-d", "name": "loss", "total": 880, "downsampled": True,
                                             "steps": [1, 880], "values": [2.3, 0.05], "times": [1.0, 2.0],
                                             "attempts": [1, 1], "ranks": [0, 0]})
    api.on("GET", "/jobs/j-d/artifacts", [{"path": "attempt-1/rank-0/model.pt", "size": 10, "modified_at": 1.0}])
    api.on("GET", "/models/digits-mlp", {"name": "digits-mlp", "project": "default", "description": "",
                                         "created_by": "admin", "created_at": 1.0, "latest_version": 1, "aliases": {},
                                         "versions": [_version_body()]})
    for fmt, job_id in (("torchscript", "j-ts"), ("onnx", "j-ox")):
        api.on("POST", "/models/digits-mlp/versions/1/export",
               {"model": "digits-mlp", "version": 1, "format": fmt, "job": job_id}, status=201)
        api.on("GET", f"/jobs/{job_id}/status", {"id": job_id, "status": "SUCCEEDED", "status_reason": "exit code 0",
                                                   "pending_reason": None})
    api.on("PUT", "/models/digits-mlp/aliases/production",
           {"alias": "production", "action": "set", "from_version": None, "to_version": 1, "by": "admin", "at": 2.0})
    api.on("GET", "/models/digits-mlp/versions/@production", _version_body(aliases=["production"], formats={
        "onnx": {"file": "model.onnx", "report": {"max_abs_diff": 1e-7, "inputs_checked": 1008, "method": "onnx-dynamo"}}}))
    result = cli("demo")
    assert result.exit_code == 0, result.output
    assert built == ["demo-digits"]
    assert "submitted job j-d; following its logs" in result.stdout
    assert "test_accuracy=0.9700" in result.stdout  # the followed log
    assert "test accuracy: 0.9700" in result.stdout
    assert "params: lr=0.003" in result.stdout and "metric loss: 0.0500 at step 880 (880 points)" in result.stdout
    assert "loss curve (LTTB, 8 of 880): 1:2.300  880:0.050" in result.stdout
    assert "registered digits-mlp:1" in result.stdout
    assert "exporting digits-mlp:1 to onnx (job j-ox)" in result.stdout
    assert "digits-mlp@production: - → 1" in result.stdout
    assert "digits-mlp:1 (production)" in result.stdout and "image      deepdock/env:abc" in result.stdout
    assert "format     onnx: model.onnx (max abs diff 1e-07, 1008 inputs, onnx-dynamo)" in result.stdout
    exports = [json.loads(r.content) for r in api.requests if r.url.path.endswith("/export")]
    assert [e["format"] for e in exports] == ["torchscript", "onnx"]
    assert served == [("digits-mlp", "j-d")]


def test_demo_exits_1_when_the_job_fails(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_prebuild", lambda spec: None)
    api.error("GET", "/services/digits", 404, "not_found", "no service digits")
    api.on("GET", "/me", {"name": "admin", "is_admin": True})
    api.on("POST", "/code", {"sha256": "ef" * 32, "size": 1}, status=201)
    api.on("POST", "/jobs", job_body(id="j-d", status="QUEUED"), status=201)
    api.on("GET", "/jobs/j-d", detail_body(id="j-d", status="FAILED", attempts=1, status_reason="oom_killed"))
    api.on("GET", "/jobs/j-d/logs", content=b"Killed\n")
    result = cli("demo")
    assert result.exit_code == 1
    assert "job j-d FAILED: oom_killed" in result.stdout


def test_the_cli_loads_without_the_server_and_registers_every_noun() -> None:
    code = ("import sys; from deepdock.cli.main import app; "
            "import typer.main as t; g = t.get_command(app); "
            "print(sorted(g.commands)); "
            "print(sorted(m for m in sys.modules if m.startswith('deepdock.server')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(sorted(["version", "env", "base", "sim", "server", "run", "ps", "describe", "logs", "stop",
                                 "metrics", "params", "compare", "artifacts", "job", "model",
                                 "demo", "node", "user", "project", "volume",
                                 "serve", "service", "predict"]))
    assert out[1] == "[]"
