"""What every background loop shares: the database, the engines, settings, and the wake-up signal."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from deepdock.server.background.wake import WakeSender
from deepdock.server.db.session import Database
from deepdock.server.services.logs import LogFollowers, LogStore
from deepdock.server.services.nodes import BackendPool
from deepdock.settings import Settings

log = logging.getLogger("deepdock.server")


@dataclass
class LoopContext:
    db: Database
    pool: BackendPool
    settings: Settings
    logs: LogStore
    followers: LogFollowers
    # Set by anything that changes what the scheduler would decide (submit, finish, node change).
    wake_scheduler: threading.Event = field(default_factory=threading.Event)
    wake_reconciler: threading.Event = field(default_factory=threading.Event)
    # Attempts whose start is in flight in this process; the reconciler leaves them alone.
    starting: set[int] = field(default_factory=set)
    stopping: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # In an API worker process the loops run elsewhere: wake-ups also go to the control process.
    wake_sender: WakeSender | None = None

    def wake(self, target: str) -> None:
        """Tell the scheduler or the reconciler that there is work, wherever it runs."""
        (self.wake_scheduler if target == "scheduler" else self.wake_reconciler).set()
        if self.wake_sender is not None:
            self.wake_sender.send(target)

    @property
    def artifacts_root(self) -> Path:
        return self.settings.artifacts_dir
