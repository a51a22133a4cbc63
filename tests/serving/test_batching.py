"""serving/batching.py: requests that arrive together share a batch, split back by rows; shapes are never
mixed; the batch size and the wait are bounded; a model's failure reaches every caller of its batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from deepdock.serving.batching import Batcher, ModelError


class Recorder:
    """A model that doubles its input and records each batch's rows (optionally holding the first batch)."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.hold = hold

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.hold is not None and not self.batches:
            self.hold.wait(5)
        self.batches.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}


def rows(n: int, value: float, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), value, dtype=np.float32)}


async def _with(batcher: Batcher, coro):  # type: ignore[no-untyped-def]
    batcher.start()
    try:
        return await coro
    finally:
        await batcher.stop()


def test_concurrent_requests_are_batched_and_split_back():
    model = Recorder()
    batcher = Batcher(model, max_batch_size=16, max_wait_s=0.05)

    async def run():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(batcher.infer(rows(2, i)) for i in range(5)))

    results = asyncio.run(_with(batcher, run()))
    assert model.batches == [10]
    for i, out in enumerate(results):
        assert out["y"].shape == (2, 3) and np.all(out["y"] == 2 * i)


def test_batches_fill_while_the_model_is_busy_and_never_exceed_the_maximum():
    hold = threading.Event()
    model = Recorder(hold)
    batcher = Batcher(model, max_batch_size=4, max_wait_s=0)

    async def run():  # type: ignore[no-untyped-def]
        first = asyncio.ensure_future(batcher.infer(rows(1, 0)))
        await asyncio.sleep(0.05)  # the first batch is running (held): the rest queue up
        rest = [asyncio.ensure_future(batcher.infer(rows(1, i))) for i in range(1, 10)]
        await asyncio.sleep(0.05)
        hold.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(_with(batcher, run()))
    assert model.batches == [1, 4, 4, 1]
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(10)]


def test_requests_of_other_shapes_wait_for_their_own_batch():
    model = Recorder()
    batcher = Batcher(model, max_batch_size=16, max_wait_s=0.05)

    async def run():  # type: ignore[no-untyped-def]
        return await asyncio.gather(batcher.infer(rows(1, 1, width=3)), batcher.infer(rows(1, 2, width=5)),
                                    batcher.infer(rows(1, 3, width=3)))

    a, b, c = asyncio.run(_with(batcher, run()))
    assert sorted(model.batches) == [1, 2]
    assert b["y"].shape == (1, 5) and float(c["y"][0, 0]) == 6.0


def test_a_lone_request_waits_at_most_max_wait():
    model = Recorder()
    batcher = Batcher(model, max_batch_size=64, max_wait_s=0.01)

    async def run():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.infer(rows(1, 1))
        return loop.time() - started

    took = asyncio.run(_with(batcher, run()))
    assert model.batches == [1] and took < 1.0  # bounded by the wait, not by a full batch


def test_a_model_failure_reaches_every_caller_of_the_batch_and_the_next_batch_runs():
    calls = []

    def flaky(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs["x"].shape[0])
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return {"y": inputs["x"]}

    batcher = Batcher(flaky, max_batch_size=8, max_wait_s=0.05)

    async def run():  # type: ignore[no-untyped-def]
        failed = await asyncio.gather(batcher.infer(rows(1, 1)), batcher.infer(rows(1, 2)), return_exceptions=True)
        ok = await batcher.infer(rows(1, 3))
        return failed, ok

    failed, ok = asyncio.run(_with(batcher, run()))
    assert all(isinstance(f, ModelError) and "CUDA out of memory" in str(f) for f in failed)
    assert float(ok["y"][0, 0]) == 3.0


def test_a_model_that_does_not_batch_is_an_error_naming_the_output():
    batcher = Batcher(lambda inputs: {"y": np.zeros(3)}, max_batch_size=8, max_wait_s=0)
    with pytest.raises(ModelError, match="output 'y' has shape \\[3\\], not a batch of 2"):
        asyncio.run(_with(batcher, batcher.infer(rows(2, 1))))


def test_a_fast_model_moves_onto_the_event_loop_and_a_slow_one_stays_in_its_thread():
    import time as _time

    seen: list[str] = []

    def fast(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.current_thread().name)
        return {"y": inputs["x"]}

    def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.current_thread().name)
        _time.sleep(0.002)
        return {"y": inputs["x"]}

    for model, expected in ((fast, "MainThread"), (slow, "deepdock-model")):
        seen.clear()
        batcher = Batcher(model, max_batch_size=4, max_wait_s=0)

        async def run(b: Batcher = batcher) -> None:
            for i in range(3):
                await b.infer(rows(1, i))

        asyncio.run(_with(batcher, run()))
        assert seen[0].startswith("deepdock-model")  # the first batch, not yet measured, in the thread
        assert all(name.startswith(expected) for name in seen[1:]), seen
