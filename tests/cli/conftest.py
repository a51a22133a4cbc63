"""Every CLI test talks to a scripted API (tests/cli/fakeapi.py) through the CLI's one Client factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from deepdock.cli import output
from deepdock.cli.main import app
from tests.cli.fakeapi import FakeApi

Invoke = Callable[..., Result]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(output, "client_factory", lambda: fake.client(tmp_path / "home"))
    monkeypatch.setattr(output, "WAIT_POLL_S", 0.0)
    return fake


@pytest.fixture
def cli() -> Invoke:
    """``cli("ps", "--all")``: runs the command; wide enough that table cells are never folded."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    return invoke
