"""Ingest of event lines into series, params and checkpoints: exactly once, across rewrites and restarts;
and the reads (downsampled series, params, final metrics). SQLite and PostgreSQL (``steps`` fixture)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from deepdock.errors import NotFoundError, SpecError
from deepdock.sdk import protocol
from deepdock.server.db.models import Checkpoint, MetricLatest, User
from deepdock.server.services import runs
from deepdock.server.services.series import CHUNK_POINTS, append_series, count_points, read_columns
from deepdock.server.services.tracking import ingest_log, model_events
from tests.server.factories import make_job, make_project, make_user


def metric_line(step: int, **values: float) -> bytes:
    # A fixed time per step: a replayed log has the same bytes, as Docker's replay does.
    return protocol.encode({"k": "m", "s": step, "t": 1_700_000_000.0 + step, "v": values})


@pytest.fixture
def job_id(steps) -> str:
    with steps.session() as session:
        return make_job(session).id


def _count(steps, job_id: str) -> int:
    with steps.session() as session:
        return count_points(session, job_id)


def test_points_params_and_checkpoints_are_stored_with_the_cursor(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    log.write_bytes(b"starting\n" + protocol.encode({"k": "p", "v": {"lr": 0.1, "opt": "adam"}})
                    + b"".join(metric_line(s, loss=1.0 / (s + 1), acc=s / 10) for s in range(10))
                    + protocol.encode({"k": "c", "name": "ckpt-000000000009.pt", "s": 9, "sha256": "ab" * 32, "size": 12})
                    + b"partial line without newline")
    result, offset = ingest_log(steps.db, log, job_id, 1, 0)
    assert (result.points, result.params, result.checkpoints, result.at_end) == (20, 2, 1, True)
    assert offset == log.read_bytes().rindex(b"\n") + 1
    with steps.session() as session:
        user = session.scalar(select(User))
        assert runs.job_params(session, user, job_id).params == {"lr": 0.1, "opt": "adam"}
        final = {s.name: (s.value, s.step, s.count) for s in runs.job_metrics(session, user, job_id).series}
        assert final == {"acc": (0.9, 9, 10), "loss": (0.1, 9, 10)}
        assert session.scalar(select(Checkpoint.status)) == "pending"


def test_reingesting_after_a_crash_or_a_rewrite_stores_nothing_twice(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    log.write_bytes(b"".join(metric_line(s, loss=float(s)) for s in range(100)))
    ingest_log(steps.db, log, job_id, 1, 0)
    # The follower of a restarted server rewrites the file from the start: shorter at first...
    log.write_bytes(b"".join(metric_line(s, loss=float(s)) for s in range(40)))
    result, _ = ingest_log(steps.db, log, job_id, 1, 0)
    assert result.points == 0
    # ...then the same bytes again, and what the job logged meanwhile.
    log.write_bytes(b"".join(metric_line(s, loss=float(s)) for s in range(150)))
    result, _ = ingest_log(steps.db, log, job_id, 1, 0)
    assert result.points == 50 and _count(steps, job_id) == 150


def test_a_crash_before_commit_stores_nothing_and_the_retry_stores_all(steps, job_id, tmp_path, monkeypatch):
    from deepdock.server.services import tracking

    log = tmp_path / "rank-0.log"
    log.write_bytes(b"".join(metric_line(s, loss=float(s)) for s in range(30)))
    real = tracking._insert_cursor

    def die(*args, **kwargs):
        raise RuntimeError("killed between the points and the cursor")

    monkeypatch.setattr(tracking, "_insert_cursor", die)
    with pytest.raises(RuntimeError):
        ingest_log(steps.db, log, job_id, 1, 0)
    assert _count(steps, job_id) == 0
    monkeypatch.setattr(tracking, "_insert_cursor", real)
    ingest_log(steps.db, log, job_id, 1, 0)
    assert _count(steps, job_id) == 30


def test_a_large_backlog_is_read_in_bounded_pieces(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    log.write_bytes(b"".join(metric_line(s, loss=float(s)) for s in range(500)))
    seen, rounds = 0, 0
    while True:
        result, _ = ingest_log(steps.db, log, job_id, 1, 0, max_bytes=4096)
        seen += result.points
        rounds += 1
        if result.at_end:
            break
    assert seen == 500 and rounds > 5


def test_latest_follows_the_newest_attempt(steps, job_id, tmp_path):
    first, second = tmp_path / "a1.log", tmp_path / "a2.log"
    first.write_bytes(b"".join(metric_line(s, loss=10.0 - s) for s in range(10)))
    second.write_bytes(metric_line(3, loss=0.5))
    ingest_log(steps.db, first, job_id, 1, 0)
    ingest_log(steps.db, second, job_id, 2, 0)
    ingest_log(steps.db, first, job_id, 1, 0)  # nothing new from the older attempt
    with steps.session() as session:
        latest = session.get(MetricLatest, (job_id, "loss"))
        assert (latest.attempt, latest.step, latest.value, latest.count) == (2, 3, 0.5, 11)


def test_series_read_in_order_and_downsampled(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    log.write_bytes(b"".join(metric_line(s, loss=float((s * 37) % 101), spike=100.0 if s == 2345 else 1.0)
                             for s in range(5000)))
    ingest_log(steps.db, log, job_id, 1, 0)
    with steps.session() as session:
        user = session.scalar(select(User))
        full = runs.read_series(session, user, job_id, "loss")
        assert full["total"] == 5000 and full["steps"].tolist() == list(range(5000)) and not full["downsampled"]
        assert full["values"][37].item() == float((37 * 37) % 101)
        small = runs.read_series(session, user, job_id, "loss", max_points=200)
        assert small["downsampled"] and len(small["steps"]) == 200 and small["total"] == 5000
        kept = small["steps"].tolist()
        assert kept[0] == 0 and kept[-1] == 4999 and kept == sorted(kept)
        # LTTB keeps the peak a chart must show (taking every 25th point would drop it)
        spike = runs.read_series(session, user, job_id, "spike", max_points=50)
        assert 2345 in spike["steps"].tolist() and spike["values"].max() == 100.0
        newer = runs.read_series(session, user, job_id, "loss", after_step=4990)
        assert newer["steps"].tolist() == list(range(4991, 5000))
        with pytest.raises(NotFoundError):
            runs.read_series(session, user, job_id, "nope")
        with pytest.raises(SpecError):
            runs.read_series(session, user, job_id, "loss", max_points=1)
        with pytest.raises(SpecError):
            runs.read_series(session, user, job_id, "bad name")


def test_other_projects_jobs_are_not_readable(steps, job_id):
    with steps.session() as session:
        outsider = make_user(session, "eve", is_admin=False)
        make_project(session, "other", members=[outsider])
        with pytest.raises(NotFoundError):
            runs.job_metrics(session, outsider, job_id)
        with pytest.raises(NotFoundError):
            runs.read_series(session, outsider, job_id, "loss")


def test_model_events_are_found_in_the_whole_log(tmp_path):
    log = tmp_path / "rank-0.log"
    log.write_bytes(metric_line(0, loss=1.0) + protocol.encode({"k": "r", "name": "digits", "dir": "models/digits",
                                                                 "signature": None}))
    assert [e["name"] for e in model_events(log)] == ["digits"]


def test_chunks_fill_up_then_a_new_one_begins_and_old_steps_are_dropped(steps, job_id):
    with steps.session() as session:
        kept = append_series(session, job_id, 1, 0, "loss", [(s, s * 0.5, 100.0 + s) for s in range(CHUNK_POINTS - 10)])
        assert len(kept) == CHUNK_POINTS - 10
    with steps.session() as session:
        # a replayed step (10) and one going back (5) are dropped; the rest spills into a second chunk
        more = [(10, 0.0, 0.0), (CHUNK_POINTS - 10, 1.0, 1.0), (5, 0.0, 0.0)] + [(s, 2.0, 2.0) for s in
                                                                              range(CHUNK_POINTS - 9, CHUNK_POINTS + 20)]
        kept = append_series(session, job_id, 1, 0, "loss", more)
        assert [p[0] for p in kept] == list(range(CHUNK_POINTS - 10, CHUNK_POINTS + 20))
    with steps.session() as session:
        columns = read_columns(session, job_id, "loss")
        assert columns.steps.tolist() == list(range(CHUNK_POINTS + 20))
        assert columns.values[3] == 1.5 and columns.times[3] == 103.0
        assert count_points(session, job_id) == CHUNK_POINTS + 20
        append_series(session, job_id, 2, 0, "loss", [(0, 9.0, 9.0)])  # a new attempt starts its own steps
    with steps.session() as session:
        columns = read_columns(session, job_id, "loss")
        assert columns.attempts.tolist()[-2:] == [1, 2] and columns.steps.tolist()[-1] == 0
        assert read_columns(session, job_id, "loss", attempt=2).values.tolist() == [9.0]


def test_a_batch_line_of_many_steps_is_ingested_like_single_lines(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    batch = {"k": "b", "e": [{"s": s, "t": 1.0 + s, "v": {"loss": s / 10}} for s in range(50)]}
    log.write_bytes(protocol.encode(batch) + protocol.encode({"k": "b", "e": ["junk", {"s": "x"}]}))
    result, _ = ingest_log(steps.db, log, job_id, 1, 0)
    assert result.points == 50 and _count(steps, job_id) == 50



def test_a_columns_line_of_many_steps_and_two_groups_is_ingested_and_a_forged_one_skipped(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    items = [(s, 1.0 + s, {"loss": s / 10, "acc": s / 100}) for s in range(40)] + [(40, 41.0, {"val_loss": 0.5})]
    good = protocol.encode(protocol.encode_columns(items))
    forged = [{"k": "a", "g": [{"n": ["loss"], "s": "AAAAAAAAAAA=", "t": "AAAAAAAAAAA=", "v": []}]},  # no column
              {"k": "a", "g": [{"n": ["loss"], "s": "not base64!", "t": "", "v": [""]}]},
              {"k": "a", "g": "junk"}]
    log.write_bytes(good + b"".join(protocol.encode(f) for f in forged))
    result, _ = ingest_log(steps.db, log, job_id, 1, 0)
    assert result.points == 81 and _count(steps, job_id) == 81
    with steps.session() as session:
        loss = read_columns(session, job_id, "loss")
        assert loss.steps.tolist() == list(range(40)) and loss.values.tolist()[-1] == 3.9
        assert read_columns(session, job_id, "val_loss").values.tolist() == [0.5]

def test_forged_events_touch_nothing_but_the_jobs_own_series(steps, job_id, tmp_path):
    log = tmp_path / "rank-0.log"
    log.write_bytes(protocol.MARKER_BYTES + b'{"k":"m","s":1,"t":1.0,"v":{"loss":"nan","bad name":1.0,"ok":2.0}}\n'
                    + protocol.encode({"k": "c", "name": "../../etc/passwd", "s": 1, "sha256": "0" * 64, "size": 1})
                    + protocol.encode({"k": "c", "name": "ckpt-000000000001.pt", "s": 1, "sha256": "0" * 64, "size": 1}))
    result, _ = ingest_log(steps.db, log, job_id, 1, 0)
    assert result.points == 1 and result.checkpoints == 1
    with steps.session() as session:
        assert [c.name for c in session.scalars(select(Checkpoint))] == ["ckpt-000000000001.pt"]
        assert session.get(MetricLatest, (job_id, "ok")) is not None and session.get(MetricLatest, (job_id, "loss")) is None


def test_data_hashes_are_stored_once_per_attempt_and_mount(steps, job_id, tmp_path):
    from deepdock.server.db.models import DataRead

    event = {"k": "d", "target": "/data", "sha256": "ab" * 32, "files": 3, "bytes": 4004, "hashed_bytes": 4004,
             "complete": True}
    for rank in (0, 1):
        log = tmp_path / f"rank-{rank}.log"
        log.write_bytes(protocol.encode(event))
        ingest_log(steps.db, log, job_id, 1, rank)
    with steps.session() as session:
        rows = list(session.scalars(select(DataRead)))
        assert [(r.target, r.sha256, r.files, r.complete) for r in rows] == [("/data", "ab" * 32, 3, True)]
