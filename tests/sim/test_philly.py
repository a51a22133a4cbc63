"""The Philly loader on the real trace (read from ../shared; never copied into the repo)."""

from __future__ import annotations

import pytest

from deepdock.settings import get_settings
from deepdock.sim.philly import default_philly_dir, load_philly, restart_penalty

PHILLY_DIR = get_settings().philly_dir or default_philly_dir()
pytestmark = pytest.mark.skipif(not (PHILLY_DIR / "philly.csv").is_file(),
                                reason=f"the Philly trace is not present in {PHILLY_DIR}")


def test_replay_selection_and_capacity() -> None:
    parts = load_philly(PHILLY_DIR, scale=0.25)
    assert len(parts) == 11
    assert sum(len(p.jobs) for p in parts) == 68_503
    assert sum(p.gpus for p in parts) == 704
    assert all(len(n.gpus) == 8 for p in parts for n in p.nodes)
    full = load_philly(PHILLY_DIR, scale=1.0)
    assert sum(p.gpus for p in full) == 2_816


def test_large_jobs_take_whole_nodes_and_penalties() -> None:
    parts = load_philly(PHILLY_DIR, scale=0.25)
    jobs = [j for p in parts for j in p.jobs]
    big = [j for j in jobs if j.replicas > 1]
    assert big and all(j.resources.gpus == 8 for j in big)
    assert all(j.resources.gpus <= 8 for j in jobs)
    assert all(p.jobs == sorted(p.jobs, key=lambda j: (j.submit_time, j.id)) for p in parts)
    assert all(j.project == p.vc for p in parts for j in p.jobs)
    one = next(j for j in jobs if j.total_gpus == 1)
    assert restart_penalty(one) == 7
    assert restart_penalty(big[0]) == 60
