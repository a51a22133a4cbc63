"""What the app, its routers and the background steps share: the database, the engines, the settings,
the log store, the clock and the wake-up signals. Built once per process by ``new_context``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deepdock.artifacts import ArtifactStore, store_from_url
from deepdock.compute.base import ComputeBackend
from deepdock.compute.pool import BackendFactory, BackendPool, docker_factories
from deepdock.server.db.models import Node
from deepdock.server.db.session import Database
from deepdock.server.services.attempts import Backoff
from deepdock.server.services.logs import LogStore
from deepdock.server.services.nodes import node_connection
from deepdock.server.wake import WakeSender
from deepdock.settings import Settings

log = logging.getLogger("deepdock.server")

Clock = Callable[[], float]
WAKE_SCHEDULER = "scheduler"
WAKE_RECONCILER = "reconciler"
WAKE_ROLLOUT = "rollout"


@dataclass
class AppContext:
    db: Database
    pool: BackendPool
    settings: Settings
    logs: LogStore
    artifacts: ArtifactStore
    # Epoch seconds. Tests give a controllable clock so a state step runs without sleeps.
    clock: Clock = time.time
    # Set by anything that changes what the scheduler would decide (submit, finish, node change).
    wake_scheduler: threading.Event = field(default_factory=threading.Event)
    wake_reconciler: threading.Event = field(default_factory=threading.Event)
    # Set when a service changes (apply, update, scale, rollback) or its image is built.
    wake_rollout: threading.Event = field(default_factory=threading.Event)
    # In an API worker process the loops run elsewhere: wake-ups also go to the control process.
    wake_sender: WakeSender | None = None

    def wake(self, target: str) -> None:
        """Tell the scheduler, the reconciler or the rollout step that there is work, wherever it runs."""
        {WAKE_SCHEDULER: self.wake_scheduler, WAKE_ROLLOUT: self.wake_rollout}.get(target, self.wake_reconciler).set()
        if self.wake_sender is not None:
            self.wake_sender.send(target)

    def backend(self, node: Node) -> ComputeBackend:
        return self.pool.get(node_connection(node))

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.settings.retry_backoff_s, self.settings.retry_backoff_max_s)

    @property
    def artifacts_root(self) -> Path:
        return self.settings.artifacts_dir


def new_context(settings: Settings, factories: dict[str, BackendFactory] | None = None,
                clock: Clock = time.time) -> AppContext:
    store = store_from_url(settings.artifact_store, local_root=settings.artifacts_dir,
                           s3_endpoint_url=settings.s3_endpoint_url or None)
    if factories is None:
        factories = docker_factories(settings.gpu_probe_image or None)
    return AppContext(db=Database(settings.db_url), pool=BackendPool(factories), settings=settings,
                      logs=LogStore(settings.home / "logs"), artifacts=store, clock=clock)
