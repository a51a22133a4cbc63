"""Checkpoints: atomic, newest wins, pruned in the container, and the stop signal."""

from __future__ import annotations

import os
import signal

import pytest

from deepdock.sdk import checkpoints, protocol, tracking


@pytest.fixture
def job(tmp_path, monkeypatch):
    out = tmp_path / "stdout"
    out.touch()
    monkeypatch.setenv("DEEPDOCK_JOB_ID", "job123")
    monkeypatch.setenv("DEEPDOCK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.setattr(tracking, "CONTAINER_STDOUT", str(out))
    monkeypatch.setattr(tracking, "_channel", tracking._Channel())
    monkeypatch.setattr(checkpoints, "_torch", lambda: None)  # pickle: the repo's venv has no torch
    return tmp_path


def _events(root):
    tracking.flush()
    return [e for e in map(protocol.decode_line, (root / "stdout").read_bytes().split(b"\n")) if e]


def test_save_then_load_the_newest_and_announce_it(job):
    checkpoints.save_checkpoint({"step": 1, "w": [1.0]}, step=1)
    path = checkpoints.save_checkpoint({"step": 2, "w": [2.0]}, step=2)
    assert checkpoints.load_checkpoint() == {"step": 2, "w": [2.0]}
    assert path.name == "ckpt-000000000002.pkl"
    announced = [e for e in _events(job) if e["k"] == "c"]
    assert [e["s"] for e in announced] == [1, 2]
    assert announced[-1]["size"] == path.stat().st_size and len(announced[-1]["sha256"]) == 64


def test_no_checkpoint_yet_is_none(job):
    assert checkpoints.load_checkpoint() is None


def test_a_crash_mid_write_leaves_the_previous_latest(job, monkeypatch):
    checkpoints.save_checkpoint({"good": True}, step=1)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.pickle, "dump", crash)
    with pytest.raises(OSError):
        checkpoints.save_checkpoint({"good": False}, step=2)
    assert checkpoints.load_checkpoint() == {"good": True}
    assert sorted(p.name for p in (job / "ckpt").iterdir()) == ["ckpt-000000000001.pkl"]  # no temp file left


def test_only_the_last_few_stay_in_the_container(job, monkeypatch):
    monkeypatch.setenv("DEEPDOCK_CHECKPOINT_KEEP", "2")
    for step in range(5):
        checkpoints.save_checkpoint(step, step=step)
    assert sorted(p.name for p in (job / "ckpt").iterdir()) == ["ckpt-000000000003.pkl", "ckpt-000000000004.pkl"]


def test_step_defaults_to_one_after_the_latest(job):
    checkpoints.save_checkpoint("a", step=7)
    assert checkpoints.save_checkpoint("b").name == "ckpt-000000000008.pkl"


def test_sigterm_sets_should_stop(monkeypatch):
    monkeypatch.setattr(checkpoints, "_stop", checkpoints.threading.Event())
    monkeypatch.setattr(checkpoints, "_handler", {"installed": False})
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert checkpoints.install_stop_handler()
        assert not checkpoints.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert checkpoints.should_stop()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_handler_of_the_jobs_own_is_left_alone():
    def mine(signum, frame):
        pass

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, mine)
        checkpoints.install_stop_handler()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
