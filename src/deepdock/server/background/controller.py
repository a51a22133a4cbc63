"""Runs the background loops in threads: scheduler, reconciler, node health, and container starts."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from deepdock.scheduler import get_policy
from deepdock.server.background.context import LoopContext, log
from deepdock.server.background.health import check_nodes
from deepdock.server.background.reconciler import reconcile_once
from deepdock.server.background.scheduling import FinishedJobs, run_cycle
from deepdock.server.background.starter import start_attempt
from deepdock.server.db.models import Lease, now_s

LEASE_NAME = "background-loops"
LEASE_TTL_S = 15.0
MAX_PARALLEL_STARTS = 8


class Controller:
    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx
        self.policy = get_policy(ctx.settings.scheduler_policy)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._starts = ThreadPoolExecutor(MAX_PARALLEL_STARTS, thread_name_prefix="start")
        self.has_lease = threading.Event()
        self.finished = FinishedJobs()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (
            ("lease", self._lease_loop),
            ("scheduler", self._scheduler_loop),
            ("reconciler", self._reconciler_loop),
            ("health", self._health_loop),
        ):
            thread = threading.Thread(target=target, name=f"deepdock-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.ctx.wake_scheduler.set()
        self.ctx.wake_reconciler.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._starts.shutdown(wait=False, cancel_futures=True)
        self._release_lease()

    # -- the lease: one server instance at a time runs the loops ---------------------------------------
    def _try_lease(self) -> bool:
        now = now_s()
        with self.ctx.db.session() as session:
            lease = session.get(Lease, LEASE_NAME, with_for_update=True)
            if lease is None:
                session.add(Lease(name=LEASE_NAME, holder=self.holder, expires_at=now + LEASE_TTL_S))
                return True
            if lease.holder == self.holder or lease.expires_at < now:
                lease.holder, lease.expires_at = self.holder, now + LEASE_TTL_S
                return True
            return False

    def _release_lease(self) -> None:
        try:
            with self.ctx.db.session() as session:
                lease = session.get(Lease, LEASE_NAME)
                if lease is not None and lease.holder == self.holder:
                    session.delete(lease)
        except Exception:  # noqa: BLE001 - shutting down; the lease expires by itself
            pass

    def _lease_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._try_lease():
                    if not self.has_lease.is_set():
                        # Wake-ups that arrived while another holder's lease ran out were dropped.
                        self.has_lease.set()
                        self.ctx.wake_scheduler.set()
                        self.ctx.wake_reconciler.set()
                else:
                    self.has_lease.clear()
            except Exception:  # noqa: BLE001
                log.exception("lease renewal failed")
                self.has_lease.clear()
            self._stop.wait(LEASE_TTL_S / 3)

    # -- loops -----------------------------------------------------------------------------------------
    def _scheduler_loop(self) -> None:
        while not self._stop.is_set():
            self.ctx.wake_scheduler.wait(self.ctx.settings.scheduler_idle_period_s)
            self.ctx.wake_scheduler.clear()
            if self._stop.is_set() or not self.has_lease.wait(1.0):
                continue
            try:
                self.schedule_once()
            except Exception:  # noqa: BLE001 - the loop must survive a bad cycle
                log.exception("scheduling cycle failed")
                time.sleep(0.5)
                # Retry: the wake-up that started this cycle is spent, and the work it announced is not
                # done (a transient error, e.g. SQLite refusing a stale read's upgrade to a write while
                # an API worker process commits, would otherwise leave it for the idle period).
                self.ctx.wake_scheduler.set()

    def schedule_once(self) -> None:
        with self.ctx.db.session() as session:
            placed = run_cycle(session, self.policy, now_s(), self.finished)
        for attempt_id in placed:
            self.submit_start(attempt_id)

    def submit_start(self, attempt_id: int) -> None:
        with self.ctx.lock:
            if attempt_id in self.ctx.starting:
                return
            self.ctx.starting.add(attempt_id)
        self._starts.submit(start_attempt, self.ctx, attempt_id)

    def _reconciler_loop(self) -> None:
        while not self._stop.is_set():
            self.ctx.wake_reconciler.wait(self.ctx.settings.reconcile_interval_s)
            self.ctx.wake_reconciler.clear()
            if self._stop.is_set() or not self.has_lease.wait(1.0):
                continue
            try:
                for attempt_id in reconcile_once(self.ctx):
                    self.submit_start(attempt_id)
            except Exception:  # noqa: BLE001
                log.exception("reconcile pass failed")
                time.sleep(0.5)

    def _health_loop(self) -> None:
        while not self._stop.is_set():
            if self.has_lease.wait(1.0):
                try:
                    check_nodes(self.ctx)
                except Exception:  # noqa: BLE001
                    log.exception("node health check failed")
            self._stop.wait(self.ctx.settings.node_health_interval_s)

