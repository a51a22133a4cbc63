"""The scheduler's attained-GPU-time history, fed from finished jobs in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from deepdock.server.background.schedule import FinishedJobs
from deepdock.server.db.models import Job, Project, User
from deepdock.server.db.session import Database


def _add_jobs(db: Database, rows: list[tuple[str, str, float | None, float, float]], cohort: str | None = None) -> None:
    """rows: (id, status, finished_at, gpus, attained GPU-seconds)."""
    with db.session() as session:
        user = session.query(User).first() or User(name="u", is_admin=True)
        project = session.query(Project).first() or Project(name="p")
        session.add_all([user, project])
        session.flush()
        for job_id, status, finished_at, gpus, attained in rows:
            session.add(Job(id=job_id, name=job_id, project_id=project.id, user_id=user.id, spec={}, status=status,
                            cpus=1, memory=1 << 30, gpus=gpus, replicas=1, priority=0, submitted_at=0.0,
                            created_at=0.0, updated_at=0.0, finished_at=finished_at, attained_gpu_s=attained,
                            cohort=cohort))


def test_finished_jobs_are_recorded_once_and_incrementally(db_url):
    db = Database(db_url)
    db.migrate()
    _add_jobs(db, [("a", "SUCCEEDED", 10.0, 1, 100.0), ("b", "FAILED", 10.0, 2, 50.0),
                   ("c", "RUNNING", None, 1, 30.0), ("d", "QUEUED", None, 1, 0.0)])
    finished = FinishedJobs()
    with db.session() as session:
        finished.update(session)
    assert len(finished.history) == 2  # running and queued jobs have not finished
    with db.session() as session:
        finished.update(session)
    assert len(finished.history) == 2  # nothing new: nothing recorded twice
    # Same finished_at as the last one recorded, and later: both are picked up exactly once.
    _add_jobs(db, [("e", "STOPPED", 10.0, 1, 5.0), ("f", "SUCCEEDED", 11.0, 8, 8000.0)])
    with db.session() as session:
        finished.update(session)
        finished.update(session)
    assert len(finished.history) == 4
    assert finished.history._samples == {0: [100.0, 5.0], 1: [50.0, 8000.0], 2: []}
    db.dispose()


def test_an_empty_database_gives_an_empty_history(db_url):
    db = Database(db_url)
    db.migrate()
    finished = FinishedJobs()
    with db.session() as session:
        finished.update(session)
    assert len(finished.history) == 0 and not finished.history.ready
    _add_jobs(db, [("a", "SUCCEEDED", 1.0, 0, 3.0)])
    with db.session() as session:
        finished.update(session)
    assert len(finished.history) == 1
    db.dispose()


def test_finished_jobs_inform_their_cohort(db_url):
    db = Database(db_url)
    db.migrate()
    _add_jobs(db, [(f"x{i}", "SUCCEEDED", float(i), 1, 60.0 if i % 2 else 4000.0) for i in range(40)])
    _add_jobs(db, [("s1", "SUCCEEDED", 100.0, 1, 4000.0)], cohort="slow")
    finished = FinishedJobs()
    with db.session() as session:
        finished.update(session)
    assert finished.history.has_cohort("slow") and not finished.history.has_cohort("other")
    assert finished.history.index(1, 0, "slow") < finished.history.index(1, 0)
