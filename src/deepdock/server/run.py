"""Running the server: in the foreground (`deepdock server`) or in a background thread (`deepdock demo`)."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from deepdock.server.app import create_app, prepare_control_plane
from deepdock.server.background.controller import Controller
from deepdock.server.context import new_context
from deepdock.server.metrics import MULTIPROC_ENV
from deepdock.server.wake import RECONCILER, ROLLOUT, SCHEDULER, WakeListener, wake_socket_path
from deepdock.settings import Settings, get_settings

SERVER_READY_TIMEOUT_S = 60.0


MAX_AUTO_WORKERS = 4
PR_SET_PDEATHSIG = 1


# Requests in flight get this long to finish on shutdown; streams that never end on their own (a
# dashboard's live job page, a followed log) are cut after it, not waited for.
GRACEFUL_SHUTDOWN_S = 5

def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic"):  # one line per request / migration step is noise at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _apply_address(settings: Settings, host: str | None, port: int | None) -> None:
    if host:
        settings.host = host
    if port:
        settings.port = port


def _config(settings: Settings, host: str | None, port: int | None) -> uvicorn.Config:
    _apply_address(settings, host, port)
    _setup_logging()
    return uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                          access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def worker_count(settings: Settings) -> int:
    return settings.workers if settings.workers > 0 else min(MAX_AUTO_WORKERS, os.cpu_count() or 1)


def serve(host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    settings = get_settings()
    if workers:
        settings.workers = workers
    count = worker_count(settings)
    if count <= 1:
        uvicorn.Server(_config(settings, host, port)).run()
        return
    _apply_address(settings, host, port)
    _setup_logging()
    serve_workers(settings, count)


def serve_workers(settings: Settings, count: int) -> None:
    """This process runs the background loops; ``count`` spawned processes answer the API.

    Why split: the scheduler cycle and container starts hold the GIL for milliseconds at a time, which
    is what made API tail latency and read throughput miss their goals in one process; and HTTP work
    then spreads over every core. The workers share the listening socket (uvicorn's supervisor).
    """
    ctx = new_context(settings)
    prepare_control_plane(ctx, register_local_node=True)
    metrics_dir = settings.home / "run" / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    # Read by the spawned workers: their settings come from the environment, like this process's did.
    os.environ.update({MULTIPROC_ENV: str(metrics_dir), "DEEPDOCK_HOME": str(settings.home),
                       "DEEPDOCK_HOST": settings.host, "DEEPDOCK_PORT": str(settings.port)})
    controller = Controller(ctx)
    listener = WakeListener(wake_socket_path(settings.home),
                            {SCHEDULER: ctx.wake_scheduler, RECONCILER: ctx.wake_reconciler,
                             ROLLOUT: ctx.wake_rollout}).start()
    controller.start()
    try:
        uvicorn.run("deepdock.server.run:api_worker_app", factory=True, host=settings.host, port=settings.port,
                    workers=count, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    finally:
        listener.close()
        controller.stop()
        ctx.pool.close()
        ctx.db.dispose()


def api_worker_app() -> FastAPI:
    """Entry point of one API worker process (spawned by uvicorn's supervisor)."""
    # Die with the control process even when it is SIGKILLed: an orphaned worker would keep the port.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)  # the parent died before prctl took effect
    _setup_logging()
    return create_app(get_settings(), api_only=True)


class BackgroundServer:
    """An in-process server on a thread, for `deepdock demo` on a machine where none runs yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = uvicorn.Server(_config(settings, None, None))
        self.thread = threading.Thread(target=self.server.run, name="deepdock-server", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the embedded deepdock server exited during start; see the log above")
            try:
                if httpx.get(f"{self.settings.url}/healthz", timeout=1).status_code == 200 and self.server.started:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the embedded deepdock server did not answer within {SERVER_READY_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
