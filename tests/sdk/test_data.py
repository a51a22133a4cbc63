"""The content hash of a job's read-only mounts: stable, sensitive to content, bounded by its budget."""

from __future__ import annotations

import json

from deepdock.sdk import data, protocol, tracking


def make_tree(root):
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.bin").write_bytes(b"a" * 1000)
    (root / "train" / "b.bin").write_bytes(b"b" * 3000)
    (root / "labels.csv").write_text("x,y\n")


def test_the_tree_hash_follows_the_content_not_the_time(tmp_path):
    make_tree(tmp_path / "d")
    first = data.tree_hash(tmp_path / "d", budget=1 << 20)
    assert first["files"] == 3 and first["bytes"] == 4004 and first["complete"] and first["hashed_bytes"] == 4004
    (tmp_path / "d" / "labels.csv").touch()  # a new mtime, the same bytes
    assert data.tree_hash(tmp_path / "d", budget=1 << 20)["sha256"] == first["sha256"]
    (tmp_path / "d" / "train" / "a.bin").write_bytes(b"A" + b"a" * 999)
    assert data.tree_hash(tmp_path / "d", budget=1 << 20)["sha256"] != first["sha256"]


def test_past_the_budget_files_count_by_size_and_time(tmp_path):
    make_tree(tmp_path / "d")
    partial = data.tree_hash(tmp_path / "d", budget=1500)
    assert not partial["complete"] and partial["hashed_bytes"] <= 1500 and partial["files"] == 3


def test_read_only_mounts_are_announced_from_inside_a_job(tmp_path, monkeypatch):
    make_tree(tmp_path / "data")
    (tmp_path / "cache").mkdir()
    out = tmp_path / "stdout"
    out.touch()
    monkeypatch.setenv("DEEPDOCK_JOB_ID", "job123")
    monkeypatch.setattr(tracking, "CONTAINER_STDOUT", str(out))
    monkeypatch.setattr(tracking, "_channel", tracking._Channel())
    monkeypatch.setenv(data.MOUNTS_ENV, json.dumps([
        {"target": str(tmp_path / "data"), "source": "/srv/data", "read_only": True, "kind": "bind"},
        {"target": str(tmp_path / "cache"), "source": "cache", "read_only": False, "kind": "volume"}]))
    thread = data.start()
    assert thread is not None
    thread.join(10)
    events = [e for e in map(protocol.decode_line, out.read_bytes().split(b"\n")) if e]
    assert [(e["k"], e["target"], e["files"]) for e in events] == [("d", str(tmp_path / "data"), 3)]
    assert events[0]["sha256"] == data.tree_hash(tmp_path / "data", 1 << 30)["sha256"]


def test_no_mounts_no_thread(monkeypatch):
    monkeypatch.delenv(data.MOUNTS_ENV, raising=False)
    assert data.start() is None
