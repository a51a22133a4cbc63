"""Every envs test gets its own DEEPDOCK_HOME (lock + wheelhouse caches) and no PyTorch index: the
host's pip configuration (find-links) provides torch here, and an unreachable index costs retries."""

from __future__ import annotations

import pytest

from deepdock.settings import get_settings


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEEPDOCK_PYTORCH_INDEX_URL", "")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
