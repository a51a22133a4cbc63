"""The controller: one lease, and the background steps run as loops on it.

Steps (one file each, each a plain function of the context that a test can call once):
  schedule     schedule.run_cycle       desired state → placements, preemptions, pending reasons
  observe      observe.run              engine listings → replica rows (lost, exited, adopted, gang rule)
  stop         stop.run                 stop requests → SIGTERM to running containers
  start        start.run                placed attempts without containers → image + containers
  collect      collect.run              ended attempts → logs, artifacts, outcome; strays removed
  node health  node_health.run          pings → health, lost nodes' attempts ended
  track        track.Tracker.run        running replicas' output → metrics, params, checkpoints copied out
  rollout      rollout.Rollouts.run     services → serving images, replica jobs, readiness, weights, gateway
  usage        usage.run                running containers → CPU and memory samples (replica_usage)

The schedule step runs when woken (submit, finish, node change) and at least every idle period; the
reconcile tick (observe → stop → start → collect) every ``reconcile_interval_s`` or when woken; health
every ``node_health_interval_s``; track every ``tracking_interval_s``; rollout every ``rollout_interval_s``;
usage every ``usage_interval_s``.
The controller also runs the gateway (HAProxy) and its access log. Engine I/O happens only in tasks
(background/tasks.py).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

from deepdock.scheduler import get_policy
from deepdock.server.background import collect, node_health, observe, start, stop, usage
from deepdock.server.background.rollout import Rollouts
from deepdock.server.background.schedule import FinishedJobs, run_cycle
from deepdock.server.background.tasks import Work
from deepdock.server.background.track import Tracker
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import Lease

LEASE_NAME = "background-loops"
LEASE_TTL_S = 15.0
# After a failed round a loop waits this long and runs again: the wake-up that started it is spent.
RETRY_AFTER_S = 0.5
JOIN_TIMEOUT_S = 5.0


class Controller:
    def __init__(self, ctx: AppContext, work: Work | None = None) -> None:
        self.ctx = ctx
        self.work = work if work is not None else Work()
        self.policy = get_policy(ctx.settings.scheduler_policy)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.finished = FinishedJobs()
        self.tracker = Tracker()
        self.rollouts = Rollouts()
        self.has_lease = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- one round of each step, callable directly (tests, and the loops below) -------------------------
    def schedule_once(self) -> int:
        with self.ctx.db.session() as session:
            placed = run_cycle(session, self.policy, self.ctx.clock(), self.finished)
        for attempt_id, node in placed:
            start.submit_start(self.ctx, self.work, attempt_id, node)
        return len(placed)

    def reconcile_once(self) -> None:
        obs = observe.run(self.ctx, self.work)
        stop.run(self.ctx, self.work, obs)
        start.run(self.ctx, self.work, obs)
        collect.run(self.ctx, self.work, obs)

    def health_once(self) -> None:
        node_health.run(self.ctx, self.work)

    def track_once(self) -> int:
        return self.tracker.run(self.ctx, self.work)

    def rollout_once(self) -> None:
        self.rollouts.run(self.ctx, self.work)

    def usage_once(self) -> int:
        return usage.run(self.ctx, self.work)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.ctx.settings
        loops: list[tuple[str, Callable[[], None], threading.Event | None, float]] = [
            ("lease", self._renew_lease, None, LEASE_TTL_S / 3),
            ("scheduler", self._gated(self.schedule_once), self.ctx.wake_scheduler, settings.scheduler_idle_period_s),
            ("reconciler", self._gated(self.reconcile_once), self.ctx.wake_reconciler, settings.reconcile_interval_s),
            ("health", self._gated(self.health_once), None, settings.node_health_interval_s),
            ("tracking", self._gated(self.track_once), None, settings.tracking_interval_s),
            ("rollout", self._gated(self.rollout_once), self.ctx.wake_rollout, settings.rollout_interval_s),
            ("usage", self._gated(self.usage_once), None, settings.usage_interval_s),
        ]
        self._start_gateway()
        for name, body, wake, period in loops:
            thread = threading.Thread(target=self._loop, args=(name, body, wake, period), name=f"deepdock-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.ctx.wake_scheduler.set()
        self.ctx.wake_reconciler.set()
        for thread in self._threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
        self.work.close()
        self._stop_gateway()
        self._release_lease()

    # -- the gateway: services' one endpoint --------------------------------------------------------------
    def _start_gateway(self) -> None:
        settings = self.ctx.settings
        if not settings.gateway_port:
            return
        from deepdock.errors import DeepdockError
        from deepdock.gateway.accesslog import AccessLog
        from deepdock.gateway.haproxy import Gateway

        access_log = AccessLog()
        access_log.start()
        gateway = Gateway(settings.home / "gateway", bind_host=settings.gateway_host, port=settings.gateway_port,
                          log_port=access_log.port, haproxy_bin=settings.haproxy_bin,
                          threads=settings.gateway_threads, metrics_port=settings.gateway_metrics_port)
        try:
            gateway.start()
        except DeepdockError as exc:
            access_log.stop()
            log.error("the services gateway did not start, so no service can be called: %s", exc.message)
            return
        self.rollouts.gateway, self.rollouts.access_log = gateway, access_log

    def _stop_gateway(self) -> None:
        gateway, access_log = self.rollouts.gateway, self.rollouts.access_log
        self.rollouts.gateway = self.rollouts.access_log = None
        if gateway is not None:
            gateway.stop()  # type: ignore[attr-defined]
        if access_log is not None:
            access_log.stop()  # type: ignore[attr-defined]

    def _loop(self, name: str, body: Callable[[], None], wake: threading.Event | None, period_s: float) -> None:
        """The one loop shape: run the body, then wait for a wake-up or the period."""
        while not self._stop.is_set():
            try:
                body()
            except Exception:  # noqa: BLE001 - a loop must survive a bad round
                log.exception("%s round failed", name)
                # e.g. a stale write (another writer moved the row): read again soon, not after the period
                self._stop.wait(RETRY_AFTER_S)
                if wake is not None:
                    wake.set()
            if wake is None:
                self._stop.wait(period_s)
            else:
                wake.wait(period_s)
                wake.clear()

    def _gated(self, body: Callable[[], object]) -> Callable[[], None]:
        """Run ``body`` only while this instance holds the lease."""
        def run() -> None:
            if not self._stop.is_set() and self.has_lease.wait(1.0):
                body()
        return run

    # -- the lease: one server instance at a time runs the loops ---------------------------------------
    def _try_lease(self) -> bool:
        now = self.ctx.clock()
        with self.ctx.db.session() as session:
            lease = session.get(Lease, LEASE_NAME, with_for_update=True)
            if lease is None:
                session.add(Lease(name=LEASE_NAME, holder=self.holder, expires_at=now + LEASE_TTL_S))
                return True
            if lease.holder == self.holder or lease.expires_at < now:
                lease.holder, lease.expires_at = self.holder, now + LEASE_TTL_S
                return True
            return False

    def _renew_lease(self) -> None:
        try:
            held = self._try_lease()
        except Exception:  # noqa: BLE001
            self.has_lease.clear()
            raise
        if held and not self.has_lease.is_set():
            # Wake-ups that arrived while another holder's lease ran out were dropped.
            self.has_lease.set()
            self.ctx.wake_scheduler.set()
            self.ctx.wake_reconciler.set()
        elif not held:
            self.has_lease.clear()

    def _release_lease(self) -> None:
        try:
            with self.ctx.db.session() as session:
                lease = session.get(Lease, LEASE_NAME)
                if lease is not None and lease.holder == self.holder:
                    session.delete(lease)
        except Exception:  # noqa: BLE001 - shutting down; the lease expires by itself
            pass
