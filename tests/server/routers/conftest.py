"""The API through a TestClient on the ``steps`` fixture's context: no loops run (``start_loops=False``), so
a test moves the background state itself with ``steps.schedule()`` / ``steps.reconcile()``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from deepdock.server.app import create_app


@pytest.fixture
def api(steps) -> Iterator[TestClient]:
    """A client holding the bootstrap admin's token."""
    app = create_app(steps.ctx.settings, ctx=steps.ctx, start_loops=False, register_local_node=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {app.state.bootstrap_token}"
        yield client


@pytest.fixture
def user_token(api) -> Callable[..., dict[str, str]]:
    """Headers of a new non-admin user in ``projects``."""
    def make(name: str, projects: list[str]) -> dict[str, str]:
        r = api.post("/api/v1/users", json={"name": name, "projects": projects})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}
    return make
