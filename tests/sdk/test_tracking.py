"""The SDK's tracking calls: checked in the job, one event line per call, on the container's output."""

from __future__ import annotations

import json
import math
import time

import pytest

from deepdock.sdk import protocol, tracking
from deepdock.sdk.protocol import TrackingError


def unbatched(data: bytes):
    for event in filter(None, map(protocol.decode_line, data.split(b"\n"))):
        if event["k"] == protocol.COLUMNS:
            yield from ({**item, "k": "m"} for item in protocol.decode_columns(event))
        else:
            yield event


@pytest.fixture
def channel(tmp_path, monkeypatch):
    """The SDK as inside a job, writing to a file in place of PID 1's stdout."""
    out = tmp_path / "stdout"
    out.touch()
    monkeypatch.setenv("DEEPDOCK_JOB_ID", "job123")
    monkeypatch.setattr(tracking, "CONTAINER_STDOUT", str(out))
    monkeypatch.setattr(tracking, "_channel", tracking._Channel())

    def events() -> list[dict]:
        tracking.flush()
        return list(unbatched(out.read_bytes()))

    yield events
    tracking.flush()  # so its flusher thread has nothing left to write into the next test's output


def test_metrics_and_params_are_one_line_each(channel):
    tracking.log_params(lr=0.01, epochs=40, arch="mlp", layers=(64, 10))
    tracking.log_metrics(0, loss=1.5, acc=0.25)
    tracking.log_metrics(1, loss=1.0)
    events = channel()
    assert events[0] == {"k": "p", "v": {"lr": 0.01, "epochs": 40, "arch": "mlp", "layers": "(64, 10)"}}
    assert [(e["s"], e["v"]) for e in events[1:]] == [(0, {"loss": 1.5, "acc": 0.25}), (1, {"loss": 1.0})]
    assert all(isinstance(e["t"], float) for e in events[1:])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"loss": float("nan")}, "not finite"),
    ({"loss": math.inf}, "not finite"),
    ({"loss": "0.5"}, "not a number"),
    ({"loss": True}, "not a number"),
    ({"loss": None}, "not a number"),
])
def test_bad_values_fail_in_the_job(channel, kwargs, message):
    with pytest.raises(TrackingError, match=message):
        tracking.log_metrics(0, **kwargs)
    assert channel() == []  # nothing half-sent


@pytest.mark.parametrize("name", ["", "has space", "-lead", "x" * 129, "a\nb", "ünï"])
def test_bad_names_fail_in_the_job(channel, name):
    with pytest.raises(TrackingError, match="not valid"):
        tracking.log_metrics(0, **{name: 1.0})


@pytest.mark.parametrize("step", [-1, 1.5, "3", None, True])
def test_bad_steps_fail(channel, step):
    with pytest.raises(TrackingError, match="step"):
        tracking.log_metrics(step, loss=1.0)


def test_steps_of_a_series_must_increase(channel):
    tracking.log_metrics(5, loss=1.0)
    with pytest.raises(TrackingError, match="not after step 5"):
        tracking.log_metrics(5, loss=0.9)
    tracking.log_metrics(5, acc=0.5)  # another series has its own steps



def test_each_metric_keeps_its_own_step_order_on_the_fast_path_and_off_it(channel):
    tracking.log_metrics(5, loss=1.0)
    tracking.log_metrics(3, val_loss=2.0)  # below the highest step so far, but val_loss's first: allowed
    with pytest.raises(TrackingError, match="'loss': step 3 is not after step 5"):
        tracking.log_metrics(3, loss=1.0)
    tracking.log_metrics(4, val_loss=1.5)
    tracking.log_metrics(6, loss=0.5, val_loss=1.0)  # above every step: the hot path
    with pytest.raises(TrackingError, match="'val_loss': step 6 is not after step 6"):
        tracking.log_metrics(6, val_loss=0.9)
    given = {"loss": 0.25}
    tracking.log_metrics(7, **given, epoch=2)  # an int value takes the checked path, and is sent as a float
    given["loss"] = 99.0  # the caller's dict afterwards changes nothing logged
    assert [(e["s"], e["v"]) for e in channel() if e["k"] == "m"] == [
        (5, {"loss": 1.0}), (3, {"val_loss": 2.0}), (4, {"val_loss": 1.5}), (6, {"loss": 0.5, "val_loss": 1.0}),
        (7, {"loss": 0.25, "epoch": 2.0})]


def test_known_names_logged_together_still_make_lines_below_pipe_buf(channel, tmp_path):
    names = [f"layer{i:03d}/" + "g" * 100 for i in range(60)]
    for i, name in enumerate(names):  # each checked alone, then all of them in one hot-path call per step
        tracking.log_metrics(i, **{name: 1.0})
    for step in range(100, 103):
        tracking.log_metrics(step, **dict.fromkeys(names, 0.5))
    events = channel()
    raw = (tmp_path / "stdout").read_bytes().splitlines()
    assert max(len(line) for line in raw) < protocol.MAX_LINE_BYTES
    logged = {}
    for e in events:
        if e["k"] == "m":
            logged.setdefault(e["s"], {}).update(e["v"])
    assert [len(logged[s]) for s in (100, 101, 102)] == [60, 60, 60] and logged[0] == {names[0]: 1.0}

def test_numpy_scalars_are_numbers(channel):
    np = pytest.importorskip("numpy")
    tracking.log_metrics(np.int64(3), loss=np.float32(0.5))
    assert channel()[0]["v"] == {"loss": 0.5} and channel()[0]["s"] == 3


def test_many_metrics_split_into_atomic_lines(channel, tmp_path):
    tracking.log_metrics(0, **{f"m{i:03d}": i / 7 for i in range(400)})
    for step in range(1, 300):
        tracking.log_metrics(step, loss=1.0 / step)
    events = channel()
    assert sum(len(e["v"]) for e in events) == 400 + 299
    raw = (tmp_path / "stdout").read_bytes().split(b"\n")
    assert 1 < len(raw) < 50  # batched: hundreds of steps in a handful of lines
    assert max(len(line) for line in raw) < protocol.MAX_LINE_BYTES


def test_metrics_are_flushed_by_time_and_before_any_other_event(channel, tmp_path, monkeypatch):
    tracking.log_metrics(0, loss=1.0)
    assert (tmp_path / "stdout").read_bytes() == b""  # batched
    tracking.log_params(lr=0.1)  # another event flushes what came before it, in order
    kinds = [e["k"] for e in unbatched((tmp_path / "stdout").read_bytes())]
    assert kinds == ["m", "p"]
    monkeypatch.setattr(tracking, "FLUSH_INTERVAL_S", 0.05)
    tracking.log_metrics(1, loss=0.5)
    def steps_written() -> list[int]:
        return [e["s"] for e in unbatched((tmp_path / "stdout").read_bytes()) if e["k"] == "m"]

    deadline = time.monotonic() + 5
    while 1 not in steps_written() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert steps_written() == [0, 1]  # the flusher wrote it while the job was quiet


def test_outside_a_job_calls_are_checked_and_kept_locally(monkeypatch):
    monkeypatch.delenv("DEEPDOCK_JOB_ID", raising=False)
    monkeypatch.setattr(tracking, "_channel", tracking._Channel())
    tracking.log_metrics(0, loss=1.0)
    assert tracking.local_events()[0]["v"] == {"loss": 1.0}
    with pytest.raises(TrackingError):
        tracking.log_metrics(1, loss=float("nan"))


def test_events_survive_a_partial_line_before_them():
    line = b"progress 50%" + protocol.encode({"k": "m", "s": 1, "t": 0.0, "v": {"loss": 2.0}}).rstrip(b"\n")
    assert protocol.decode_line(line)["v"] == {"loss": 2.0}
    data = b"hello\n" + line + b"\nbye\n"
    assert protocol.strip_events(data) == b"hello\nprogress 50%\nbye\n"


def test_forged_or_broken_event_lines_are_ignored():
    assert protocol.decode_line(protocol.MARKER_BYTES + b"{not json") is None
    assert protocol.decode_line(protocol.MARKER_BYTES + json.dumps({"k": "zz"}).encode()) is None
    assert protocol.decode_line(b"plain output") is None


def test_steps_logged_while_other_threads_flush_are_written_once_each_in_order(channel):
    """The hot path appends without the lock: a flush that runs between two appends must neither lose
    nor repeat one."""
    import threading
    done = threading.Event()

    def flush_all_the_time():
        while not done.is_set():
            tracking.flush()

    flushers = [threading.Thread(target=flush_all_the_time) for _ in range(2)]
    for thread in flushers:
        thread.start()
    try:
        for step in range(20_000):
            tracking.log_metrics(step, loss=step / 3, acc=0.5)
    finally:
        done.set()
        for thread in flushers:
            thread.join()
    events = channel()
    assert [e["s"] for e in events] == list(range(20_000))
    assert all(e["v"] == {"loss": e["s"] / 3, "acc": 0.5} for e in events)


FORKING_JOB = """
import os, sys
from deepdock.sdk import tracking
tracking.CONTAINER_STDOUT = sys.argv[1]
tracking.log_metrics(1, loss=1.0)
tracking.log_metrics(2, loss=0.5)  # pending in the parent when it forks
pid = os.fork()
if pid == 0:  # the child: its own step, then a normal exit (its atexit runs)
    tracking.log_metrics(3, child_loss=0.25)
    try:
        tracking.log_metrics(2, loss=0.1)
    except tracking.TrackingError:
        sys.exit(0)  # the parent's steps still count in the child
    sys.exit(1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX")
def test_a_forked_child_sends_only_its_own_steps(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "stdout"
    out.touch()
    job = subprocess.run([sys.executable, "-c", FORKING_JOB, str(out)], env={**__import__("os").environ, "DEEPDOCK_JOB_ID": "j1"},
                         timeout=30, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    steps = sorted((e["s"], tuple(e["v"])) for e in unbatched(out.read_bytes()))
    assert steps == [(1, ("loss",)), (2, ("loss",)), (3, ("child_loss",))]  # each once: both exited normally


@pytest.mark.parametrize("step", [2**62, 2**63, 2**70])
def test_a_step_beyond_int64_range_fails_at_the_call_on_the_hot_path_too(channel, step):
    tracking.log_metrics(0, loss=1.0)  # the name is known: the next call would take the hot path
    with pytest.raises(TrackingError, match="step"):
        tracking.log_metrics(step, loss=0.5)
    tracking.log_metrics(1, loss=0.25)
    assert [e["s"] for e in channel()] == [0, 1]


def test_the_flusher_outlives_a_failed_flush(channel, monkeypatch, capfd):
    monkeypatch.setattr(tracking, "FLUSH_INTERVAL_S", 0.02)
    real = protocol.encode_columns
    calls = []

    def fail_once(batch):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real(batch)

    monkeypatch.setattr(protocol, "encode_columns", fail_once)
    tracking.log_metrics(0, loss=1.0)  # lost with the failed flush
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    tracking.log_metrics(1, loss=0.5)
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 2 and tracking._channel.flusher.is_alive()
    assert [e["s"] for e in channel()] == [1]  # the flusher wrote step 1 after the failure
    assert "metrics not written: RuntimeError('disk on fire')" in capfd.readouterr().err


def test_many_sets_of_long_names_make_full_lines_encoded_once(channel, tmp_path, monkeypatch):
    sets = [[f"set{k:02d}/metric{i}_" + "x" * 40 for i in range(3)] for k in range(50)]
    for k, names in enumerate(sets):
        tracking.log_metrics(k, **dict.fromkeys(names, 0.0))
    tracking.flush()
    encoded = []
    real = protocol.encode_columns
    monkeypatch.setattr(protocol, "encode_columns", lambda batch: encoded.append(len(batch)) or real(batch))
    for step in range(100, 5100):
        tracking.log_metrics(step, **dict.fromkeys(sets[step % 50], step / 3))
    events = channel()
    raw = (tmp_path / "stdout").read_bytes().splitlines()
    assert max(len(line) for line in raw) < protocol.MAX_LINE_BYTES
    assert [e["s"] for e in events] == list(range(50)) + list(range(100, 5100))
    assert sum(encoded) == 5000  # the flush's estimate held: no line had to be encoded again, split
