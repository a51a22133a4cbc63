"""The SDK's tracking calls: checked in the job, one event line per call, on the container's output."""

from __future__ import annotations

import json
import math

import pytest

from deepdock.sdk import protocol, tracking
from deepdock.sdk.protocol import TrackingError


@pytest.fixture
def channel(tmp_path, monkeypatch):
    """The SDK as inside a job, writing to a file in place of PID 1's stdout."""
    out = tmp_path / "stdout"
    out.touch()
    monkeypatch.setenv("DEEPDOCK_JOB_ID", "job123")
    monkeypatch.setattr(tracking, "CONTAINER_STDOUT", str(out))
    monkeypatch.setattr(tracking, "_channel", tracking._Channel())
    monkeypatch.setattr(tracking, "_last_step", {})

    def events() -> list[dict]:
        return [e for e in map(protocol.decode_line, out.read_bytes().split(b"\n")) if e]

    return events


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


def test_numpy_scalars_are_numbers(channel):
    np = pytest.importorskip("numpy")
    tracking.log_metrics(np.int64(3), loss=np.float32(0.5))
    assert channel()[0]["v"] == {"loss": 0.5} and channel()[0]["s"] == 3


def test_many_metrics_split_into_atomic_lines(channel, tmp_path):
    tracking.log_metrics(0, **{f"m{i:03d}": i / 7 for i in range(400)})
    events = channel()
    assert len(events) > 1
    assert sum(len(e["v"]) for e in events) == 400
    raw = (tmp_path / "stdout").read_bytes().split(b"\n")
    assert max(len(line) for line in raw) < protocol.MAX_LINE_BYTES


def test_outside_a_job_calls_are_checked_and_kept_locally(monkeypatch):
    monkeypatch.delenv("DEEPDOCK_JOB_ID", raising=False)
    monkeypatch.setattr(tracking, "_channel", tracking._Channel())
    monkeypatch.setattr(tracking, "_last_step", {})
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
