"""Adaptive batching: requests that arrive together are run as one batch through the model.

One worker task takes the first waiting request, then gathers more of the same shape (every dimension
but the batch one) until the batch holds ``max_batch_size`` rows or ``max_wait_s`` has passed since that
first request; the batch runs in one worker thread, and whatever arrives meanwhile forms the next batch.
So at low load a request waits at most ``max_wait_s`` (0: never), and under load batches fill on their
own while the model is busy — Triton's dynamic batcher and Clipper's adaptive batching, without a
tuning loop. A request larger than ``max_batch_size`` rows runs alone (never split).

A model that answers a batch faster than a hand-off to the worker thread costs (a moving average below
``INLINE_BELOW_S``: an identity, a small MLP) runs on the event loop itself, where the hand-off and the
wake-up would cost more than the model; a slower one (or one that becomes slower) goes back to the thread.

The batch's outputs are split back by each request's rows; an output whose first dimension is not the
batch's is an error for every request of that batch (a model that does not batch).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from deepdock.serving.runtimes import Predict

Observer = Callable[[int, float], None]  # (rows in the batch, seconds the model took)
# Below this moving average of model time per batch, batches run on the event loop (see above).
INLINE_BELOW_S = 100e-6
# Weight of the newest batch in that average.
EMA_WEIGHT = 0.1


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple[tuple[str, str, tuple[int, ...]], ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    arrived: float = field(default_factory=time.perf_counter)


class ModelError(RuntimeError):
    """The model itself failed on a batch (the server answers 500 to each of its requests)."""


def _key(inputs: dict[str, np.ndarray]) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple(sorted((name, a.dtype.str, tuple(a.shape[1:])) for name, a in inputs.items()))


class Batcher:
    def __init__(self, predict: Predict, max_batch_size: int, max_wait_s: float,
                 observe: Observer | None = None) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be at least 1 and max_wait_s at least 0")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.observe = observe
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        # One thread: the model runs one batch at a time (its own threads parallelise inside it).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepdock-model")
        self._worker: asyncio.Task[None] | None = None
        self.model_s_avg: float | None = None  # None until the first batch: that one runs in the thread

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, inputs: dict[str, np.ndarray]) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue one request (on the loop's thread); the future gets its outputs (its own rows of the batch
        it ran in) or the ``ModelError`` of that batch."""
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, rows, _key(inputs), future))
        self._arrived.set()
        return future

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of this one request (its own rows of the batch it ran in)."""
        return await self.submit(inputs)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._gather()
            try:
                if self.model_s_avg is not None and self.model_s_avg < INLINE_BELOW_S:
                    outputs, took = self._run_batch(batch)
                else:
                    outputs, took = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - the model's own failure goes to each caller
                error = exc if isinstance(exc, ModelError) else ModelError(f"{type(exc).__name__}: {exc}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            self.model_s_avg = took if self.model_s_avg is None else (
                (1 - EMA_WEIGHT) * self.model_s_avg + EMA_WEIGHT * took)
            if self.observe is not None:
                self.observe(sum(i.rows for i in batch), took)
            start = 0
            for item in batch:
                if not item.future.done():  # a caller that went away
                    item.future.set_result({name: value[start:start + item.rows] for name, value in outputs.items()})
                start += item.rows

    async def _gather(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        deadline = first.arrived + self.max_wait_s
        while rows < self.max_batch_size:
            rows = self._take_matching(batch, rows, first.key)
            remaining = deadline - time.perf_counter()
            if rows >= self.max_batch_size or remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await self._arrived.wait()
            except TimeoutError:
                rows = self._take_matching(batch, rows, first.key)
                break
        return batch

    def _take_matching(self, batch: list[_Pending], rows: int, key: tuple[object, ...]) -> int:
        """Move queued requests of the same shape into ``batch`` while they fit; others keep their place."""
        kept: deque[_Pending] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.key == key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._queue = kept
        return rows

    def _run_batch(self, batch: list[_Pending]) -> tuple[dict[str, np.ndarray], float]:
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs}
        total = sum(item.rows for item in batch)
        started = time.perf_counter()
        outputs = self._predict(inputs)
        took = time.perf_counter() - started
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != total:
                raise ModelError(f"output {name!r} has shape {list(value.shape)}, not a batch of {total}: "
                                 "the model does not batch along the first dimension")
        return outputs, took
