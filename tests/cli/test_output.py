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


def test_demo_runs_the_job_follows_it_and_reports_accuracy(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    built: list[str] = []
    monkeypatch.setattr(demo, "_prebuild", lambda spec: built.append(spec.name))
    artifacts = tmp_path / "artifacts" / "j-d"
    (artifacts / "attempt-1" / "rank-0").mkdir(parents=True)
    (artifacts / "attempt-1" / "rank-0" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.97}))
    done = detail_body(id="j-d", status="SUCCEEDED", status_reason="exited with code 0", artifacts_dir=str(artifacts))
    api.on("GET", "/me", {"name": "admin", "is_admin": True})
    api.on("POST", "/code", {"sha256": "ef" * 32, "size": 1}, status=201)
    api.on("POST", "/jobs", job_body(id="j-d", status="QUEUED"), status=201)
    api.on("GET", "/jobs/j-d", detail_body(id="j-d", status="RUNNING", attempts=1))
    api.on("GET", "/jobs/j-d", done)
    api.on("GET", "/jobs/j-d/logs", content=b"epoch 1\ntest_accuracy=0.9700\n")
    result = cli("demo")
    assert result.exit_code == 0, result.output
    assert built == ["demo-digits"]
    assert "using the deepdock server at" in result.stdout
    assert "submitted job j-d; following its logs" in result.stdout
    assert "test_accuracy=0.9700" in result.stdout  # the followed log
    assert "job j-d SUCCEEDED: exited with code 0" in result.stdout
    assert "test accuracy: 0.9700" in result.stdout
    assert "metrics: {'test_accuracy': 0.97}" in result.stdout


def test_demo_exits_1_when_the_job_fails(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_prebuild", lambda spec: None)
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
                                 "demo", "node", "user", "project", "volume"]))
    assert out[1] == "[]"
