"""The one concurrency idiom of the background steps: keyed tasks in lanes.

A step decides in one short DB transaction what needs engine I/O (start an attempt, stop a container,
collect an attempt, follow a log, list a node's containers) and submits each piece as a task under a key.
A key already in flight is not submitted again, so a step may run every tick and stay idempotent. Each
lane (a node's name) has its own small pool: a frozen engine fills only its own lane, never another
node's. ``timeout_s`` on ``wait`` bounds how long a step waits for a lane; the engine call itself keeps
its own HTTP timeout and ends in the background.

``InlineTasks`` runs each task at once in the caller's thread: what module tests of a step use, so a
state step is tested without threads or sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

log = logging.getLogger("deepdock.server")

# Engine calls one node may have in flight at once (starts, stops, collects, listings together).
LANE_WORKERS = 8
# Followers live as long as their container, so they get threads of their own, not a bounded lane.
UNBOUNDED = 0


class Tasks:
    def __init__(self, workers_per_lane: int = LANE_WORKERS, name: str = "task") -> None:
        self.workers_per_lane = workers_per_lane
        self.name = name
        self._lock = threading.Lock()
        self._lanes: dict[str, ThreadPoolExecutor] = {}
        self._in_flight: dict[str, Future[Any]] = {}
        self._closed = False

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, lane: str = "") -> Future[Any] | None:
        """Run ``fn(*args)`` in ``lane`` unless ``key`` is in flight; None when it was (or when closed)."""
        with self._lock:
            if self._closed or key in self._in_flight:
                return None
            if self.workers_per_lane == UNBOUNDED:
                future = self._thread(key, fn, args)
            else:
                future = self._executor(lane).submit(self._run, key, fn, args)
            self._in_flight[key] = future
            return future

    def future(self, key: str) -> Future[Any] | None:
        with self._lock:
            return self._in_flight.get(key)

    def in_flight(self, key: str) -> bool:
        with self._lock:
            return key in self._in_flight

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._in_flight)

    def wait(self, futures: Iterable[Future[Any]], timeout_s: float | None) -> None:
        wait_futures(list(futures), timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            lanes, self._lanes = self._lanes, {}
        for executor in lanes.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def _executor(self, lane: str) -> ThreadPoolExecutor:
        executor = self._lanes.get(lane)
        if executor is None:
            executor = ThreadPoolExecutor(self.workers_per_lane, thread_name_prefix=f"{self.name}-{lane or 'any'}")
            self._lanes[lane] = executor
        return executor

    def _thread(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        """A daemon thread of its own: a follower lives as long as its container, and an executor's
        threads are joined at interpreter exit, so a server would not exit while a job runs."""
        future: Future[Any] = Future()

        def body() -> None:
            future.set_result(self._run(key, fn, args))

        threading.Thread(target=body, name=f"{self.name}-{key[:40]}", daemon=True).start()
        return future

    def _run(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - a bug in one task must not kill its lane; the step retries
            log.exception("background task %s failed", key)
            return None
        finally:
            with self._lock:
                self._in_flight.pop(key, None)


class InlineTasks(Tasks):
    """Runs every task at once, in the caller's thread (module tests)."""

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, lane: str = "") -> Future[Any] | None:
        with self._lock:
            if self._closed or key in self._in_flight:
                return None
            future: Future[Any] = Future()
            self._in_flight[key] = future
        result = self._run(key, fn, args)
        future.set_result(result)
        return future


class Work:
    """The task sets the steps submit to: engine calls in per-node lanes, and log followers."""

    def __init__(self, engine: Tasks | None = None, followers: Tasks | None = None) -> None:
        self.engine = engine if engine is not None else Tasks(LANE_WORKERS, name="engine")
        self.followers = followers if followers is not None else Tasks(UNBOUNDED, name="logs")

    def close(self) -> None:
        self.engine.close()
        self.followers.close()
