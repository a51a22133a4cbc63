"""A dependency that is down answers 503 with a JSON error (never a bare 500), `/healthz` reports the
database, a bug answers a JSON 500, and recovery needs nothing. On SQLite and PostgreSQL (``steps``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError

from deepdock.client import _raise_for_error
from deepdock.errors import DatabaseUnavailableError
from deepdock.server.app import create_app

JOB = {"name": "train", "image": "busybox:latest", "command": ["sleep", "100"],
       "resources": {"cpus": 1, "memory": "1g"}}


@pytest.fixture
def app(steps) -> FastAPI:  # type: ignore[no-untyped-def]
    app = create_app(steps.ctx.settings, ctx=steps.ctx, start_loops=False, register_local_node=False)

    # Test-only routes: the product has none that fail like this on purpose.
    @app.get("/api/v1/test/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/api/v1/test/integrity")
    def integrity() -> None:
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    @app.get("/api/v1/test/invalidated")
    def invalidated() -> None:
        raise DBAPIError("SELECT 1", {}, Exception("server closed the connection unexpectedly"),
                         connection_invalidated=True)

    return app


@pytest.fixture
def api(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """Server exceptions are answered, not raised: what a real client sees."""
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {app.state.bootstrap_token}"
        yield client


@contextmanager
def database_down(steps) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every new connection fails as the driver fails when the server is down; pooled ones are dropped."""
    engine = steps.db.engine
    dbapi = engine.dialect.loaded_dbapi

    def refuse(*_: object) -> None:
        raise dbapi.OperationalError("connection refused (the test stopped the database)")

    engine.dispose()
    event.listen(engine, "do_connect", refuse)
    try:
        yield
    finally:
        event.remove(engine, "do_connect", refuse)


def assert_database_unavailable(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["retry-after"] == "5"
    assert r.json() == {"error": {"code": "database_unavailable", "details": {},
                                  "message": "the database did not answer: connection refused (the test "
                                             "stopped the database)"}}


def test_database_down_is_503_json_and_recovery_is_clean(steps, api):
    steps.node("a")
    job_id = api.post("/api/v1/jobs", json={"spec": JOB}).json()["id"]
    health = api.get("/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok" and health.json()["status"] == "ok"

    with database_down(steps):
        assert_database_unavailable(api.get("/api/v1/jobs"))
        assert_database_unavailable(api.get(f"/api/v1/jobs/{job_id}"))
        assert_database_unavailable(api.get(f"/api/v1/jobs/{job_id}/status"))
        assert_database_unavailable(api.post("/api/v1/jobs", json={"spec": JOB}))
        assert_database_unavailable(api.get("/api/v1/nodes"))
        # Not authenticated yet (no cached token): the token lookup is what fails, the same way.
        assert_database_unavailable(api.get("/api/v1/jobs", headers={"Authorization": "Bearer other"}))
        health = api.get("/healthz")
        assert health.status_code == 503 and health.headers["retry-after"] == "5"
        assert health.json()["status"] == "degraded"
        assert health.json()["database"] == "connection refused (the test stopped the database)"
        # The typed client turns it back into its own class.
        with pytest.raises(DatabaseUnavailableError, match="the database did not answer"):
            _raise_for_error(api.get("/api/v1/jobs"))

    assert api.get("/healthz").json() == {"status": "ok", "version": health.json()["version"], "database": "ok"}
    assert [j["id"] for j in api.get("/api/v1/jobs").json()] == [job_id]
    assert api.get(f"/api/v1/jobs/{job_id}").status_code == 200
    r = api.post("/api/v1/jobs", json={"spec": JOB})
    assert r.status_code == 201, r.text


def test_an_invalidated_connection_is_503_and_other_database_errors_are_a_json_500(api):
    r = api.get("/api/v1/test/invalidated")
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
    assert r.json()["error"]["message"] == "the database did not answer: server closed the connection unexpectedly"
    r = api.get("/api/v1/test/integrity")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"


def test_an_unexpected_exception_is_a_json_500_and_logged(app, api, caplog):
    with caplog.at_level(logging.ERROR, logger="deepdock.server"):
        r = api.get("/api/v1/test/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": "internal", "message": "internal server error (logged)", "details": {}}}
    (record,) = [rec for rec in caplog.records if rec.name == "deepdock.server"]
    assert record.getMessage() == "internal error on GET /api/v1/test/boom"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    # A test client that raises server exceptions still sees the bug itself.
    with TestClient(app) as raising, pytest.raises(RuntimeError, match="a bug"):
        raising.get("/api/v1/test/boom")


def test_registering_an_engine_that_does_not_answer_is_422_naming_it(steps, api):
    steps.node("b", register=False).set_unreachable(True)
    r = api.post("/api/v1/nodes", json={"name": "b", "engine_url": "fake://b"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "engine_unreachable"
    assert error["message"].startswith("node b: engine fake://b did not answer: ")
    assert error["details"]["engine"] == "fake://b" and error["details"]["reason"]
