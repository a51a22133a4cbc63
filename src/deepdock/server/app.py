"""The FastAPI application: REST API under /api/v1, errors mapped to HTTP in one place, loops on start."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepdock import __version__
from deepdock.api import ErrorOut
from deepdock.compute.pool import BackendFactory
from deepdock.config import write_config
from deepdock.errors import DatabaseUnavailableError, DeepdockError
from deepdock.server.background.controller import Controller
from deepdock.server.body_limit import BodyLimitMiddleware
from deepdock.server.context import AppContext, new_context
from deepdock.server.db.models import Node, User
from deepdock.server.deps import TokenCache
from deepdock.server.metrics import Metrics
from deepdock.server.routers import admin, jobs, live, models, nodes, overview, services, tracking, volumes
from deepdock.server.services import nodes as node_service
from deepdock.server.services.auth import bootstrap_admin
from deepdock.server.wake import WakeSender, wake_socket_path
from deepdock.settings import Settings
from deepdock.ui import STATIC_DIR

API_PREFIX = "/api/v1"
LOCAL_NODE_NAME = "local"
log = logging.getLogger("deepdock.server")
# What a client should wait before it asks again while the database is down (the Retry-After header).
DATABASE_RETRY_AFTER_S = 5
# During an outage every request fails the same way: one log line per this many seconds, not one each.
DATABASE_LOG_EVERY_S = 10.0
_SQLALCHEMY_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def database_reason(exc: BaseException) -> str:
    """The driver's own first line (``connection refused``, ``terminating connection due to administrator
    command``), without the SQL statement and parameters SQLAlchemy adds to its own message."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in _SQLALCHEMY_BACKGROUND.sub("", str(orig)).splitlines() if line.strip()]
    return (lines[0] if lines else type(orig).__name__)[:300]


def _database_unavailable_response(exc: BaseException) -> JSONResponse:
    error = DatabaseUnavailableError(f"the database did not answer: {database_reason(exc)}", details={})
    return JSONResponse(status_code=error.status_code, content={"error": error.to_dict()},
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


def _register_local_node(ctx: AppContext) -> None:
    """Embedded default: the local engine becomes the first node, if it answers."""
    with ctx.db.session() as session:
        if session.scalar(select(Node.id).limit(1)) is not None:
            return
        admin_user = session.scalar(select(User).where(User.is_admin.is_(True)).limit(1))
        session.expunge_all()
    if admin_user is None:
        return
    try:
        node_service.add_node(ctx.db.session, ctx.pool, admin_user, LOCAL_NODE_NAME, ctx.settings.docker_host)
        log.info("registered the local Docker engine as node %r", LOCAL_NODE_NAME)
    except DeepdockError as exc:
        log.warning("no local Docker engine registered: %s", exc.message)


class TimingMiddleware:
    """Request latency per route into Prometheus. Plain ASGI: Starlette's @app.middleware("http")
    wraps every response in a stream and costs a large share of a small request's time."""

    def __init__(self, app, histogram) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            self.histogram.labels(scope["method"], getattr(route, "path", "other")).observe(time.perf_counter() - start)


def prepare_control_plane(ctx: AppContext, *, register_local_node: bool) -> str | None:
    """Once per start, before any request: migrate, create the admin on first start, register the
    local engine. Returns the new admin token on first start."""
    ctx.settings.home.mkdir(parents=True, exist_ok=True)
    ctx.db.migrate()
    with ctx.db.session() as session:
        token = bootstrap_admin(session)
    if token is not None:
        path = write_config(ctx.settings, ctx.settings.url, token)
        log.warning("first start: admin token written to %s", path)
    if register_local_node:
        _register_local_node(ctx)
    return token


# Declared on every operation, so clients (and the schemathesis test) know every answer's shape. Not every
# operation can give every one (a listing has no 404), but each one has the same body when it does.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "the request is malformed at the HTTP level (a bad Content-Length)",
        401: "no token, or a token that is unknown or revoked",
        403: "the caller's role does not allow this",
        404: "no such object, or one in a project the caller is not in",
        409: "the object's state does not allow this, or a name is taken",
        413: "the request body is over its limit",
        422: "the input is invalid (the message names the field)",
        502: "a node's engine answered with an error",
        503: "the database or an engine does not answer (Retry-After)",
    }.items()
}


def create_app(
    settings: Settings,
    *,
    factories: dict[str, BackendFactory] | None = None,
    ctx: AppContext | None = None,
    start_loops: bool = True,
    register_local_node: bool = True,
    api_only: bool = False,
) -> FastAPI:
    """The API. ``api_only``: a worker of a multi-process server, whose control process has already
    prepared the database and runs the background loops; the worker only answers requests and
    forwards wake-ups (see server/wake.py). ``factories``: backends by node kind (compute/pool.py);
    ``ctx``: a context made by the caller (tests give one with fake engines and their clock)."""
    ctx = ctx if ctx is not None else new_context(settings, factories)
    db = ctx.db
    # An API worker runs no loops: its control process does.
    controller = Controller(ctx) if start_loops and not api_only else None
    metrics = Metrics(db)
    if api_only:
        ctx.wake_sender = WakeSender(wake_socket_path(settings.home))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not api_only:
            app.state.bootstrap_token = prepare_control_plane(ctx, register_local_node=register_local_node)
        if controller is not None:
            controller.start()
        try:
            yield
        finally:
            if controller is not None:
                controller.stop()
            if ctx.wake_sender is not None:
                ctx.wake_sender.close()
            ctx.pool.close()
            db.dispose()

    app = FastAPI(title="deepdock", version=__version__, lifespan=lifespan, openapi_url=f"{API_PREFIX}/openapi.json",
                  docs_url=f"{API_PREFIX}/docs")
    app.state.ctx = ctx
    app.state.controller = controller
    app.state.token_cache = TokenCache()
    app.state.bootstrap_token = None

    @app.exception_handler(DeepdockError)
    async def _deepdock_error(_: Request, exc: DeepdockError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.to_dict()})

    # The framework's own answers (no route matched, a method the route does not take) in the API's error
    # shape too: a path whose parameter cannot match (a metric name with a newline) is a 404 like any other.
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(status_code=exc.status_code, content={"error": {"code": code, "message": str(exc.detail),
                                                                            "details": {}}},
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"),
             "message": "unknown field" if e["type"] == "extra_forbidden" else e["msg"]}
            for e in exc.errors()
        ]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return JSONResponse(status_code=422, content={"error": {"code": "invalid_spec", "message": message,
                                                                "details": details}})

    last_database_log = -DATABASE_LOG_EVERY_S

    def _log_database_down(request: Request, exc: BaseException) -> None:
        nonlocal last_database_log
        now = time.monotonic()
        if now - last_database_log >= DATABASE_LOG_EVERY_S:
            last_database_log = now
            log.warning("database unavailable (%s %s): %s", request.method, request.url.path, database_reason(exc))

    # A dependency that is down is a known condition: 503 with a JSON error and Retry-After, never a bare
    # 500 or a dropped connection. Starlette picks the handler of the most specific class.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        _log_database_down(request, exc)
        return _database_unavailable_response(exc)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            _log_database_down(request, exc)
            return _database_unavailable_response(exc)
        raise exc  # an integrity or programming error is a bug: the catch-all below answers it

    # Anything else is a bug. Starlette's ServerErrorMiddleware calls this handler, sends its answer and
    # re-raises (so the server, and a TestClient that raises server exceptions, still see it).
    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"error": {"code": "internal",
                                                                "message": "internal server error (logged)",
                                                                "details": {}}})

    app.add_middleware(TimingMiddleware, histogram=metrics.request_seconds)
    app.add_middleware(BodyLimitMiddleware, settings=ctx.settings, code_path=f"{API_PREFIX}/code")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """Cheap on purpose (a benchmark baseline): one ``SELECT 1``, on the thread pool; the engine's
        short connect timeout bounds it while the database is down."""
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return JSONResponse(status_code=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
                                content={"status": "degraded", "version": __version__,
                                         "database": database_reason(exc)})
        return JSONResponse({"status": "ok", "version": __version__, "database": "ok"})

    # The dashboard (deepdock.ui): static files; every page reads the API with the user's token.
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    for router in (jobs.router, tracking.router, models.router, nodes.router, admin.router, volumes.router,
                   services.router, live.router, overview.router):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    return app
