"""Running the server: in the foreground (`deepdock server`) or in a background thread (`deepdock demo`)."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import uvicorn

from deepdock.server.app import create_app
from deepdock.settings import Settings, get_settings

SERVER_READY_TIMEOUT_S = 60.0


def _config(settings: Settings, host: str | None, port: int | None) -> uvicorn.Config:
    if host:
        settings.host = host
    if port:
        settings.port = port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic"):  # one line per request / migration step is noise at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                          access_log=False)


def serve(host: str | None = None, port: int | None = None) -> None:
    settings = get_settings()
    uvicorn.Server(_config(settings, host, port)).run()


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
