"""Cohorts: batches of jobs whose finished members inform how the rest are ranked."""

from __future__ import annotations

import pytest

from deepdock.scheduler import ClusterState, get_policy
from deepdock.scheduler.cohort import COHORT_GAP_S, CohortTracker, cohort_key
from deepdock.scheduler.history import BASE_GPU_S, AttainedHistory, attained_bin
from deepdock.scheduler.types import Resources
from deepdock.sim.trace import job_from_record

from .helpers import job, node, placed_ids

LONG = BASE_GPU_S * 2**6


def _history(n: int = 16) -> AttainedHistory:
    """The class: half the jobs need BASE_GPU_S, half LONG; no cohort has finished anything."""
    h = AttainedHistory()
    for _ in range(n):
        h.record(1, BASE_GPU_S)
        h.record(1, LONG)
    return h


def test_tracker_chains_submissions_of_one_key_within_the_gap() -> None:
    t = CohortTracker()
    key = cohort_key("p", "u", Resources(1, 1, 1), 1, None)
    other = cohort_key("p", "u", Resources(1, 1, 2), 1, None)
    assert t.assign(key, "a", 0.0) == "a"
    assert t.assign(key, "b", COHORT_GAP_S) == "a"
    # The chain extends: c is more than a gap after a, but within one of b.
    assert t.assign(key, "c", 2 * COHORT_GAP_S) == "a"
    assert t.assign(other, "d", 2 * COHORT_GAP_S) == "d"  # another shape: another batch
    assert t.assign(key, "e", 3 * COHORT_GAP_S + 1) == "e"  # a pause: a new batch


def test_a_finished_member_moves_its_cohort_away_from_the_class() -> None:
    h = _history()
    h.record(1, LONG, cohort="slow")
    h.record(1, BASE_GPU_S, cohort="fast")
    plain = h.index(1, 0)
    assert h.index(1, 0, "slow") < plain < h.index(1, 0, "fast")
    assert h.index(1, 0, "never-finished") == plain


def test_unfinished_members_count_as_censored_observations() -> None:
    # One member finished fast; three others have already run past that without finishing. Counting only
    # the finished one would call the cohort fast.
    h = _history()
    h.record(1, BASE_GPU_S, cohort="c")
    censored = (attained_bin(10 * BASE_GPU_S),) * 3
    assert h.index(1, 0, "c", censored) < h.index(1, 0, "c")
    # Past everything the cohort has shown, the class alone decides.
    assert h.index(1, 2 * LONG, "c") == h.index(1, 2 * LONG)


def test_default_policy_runs_the_batch_that_finishes_fast_first() -> None:
    h = _history()
    h.record(1, LONG, cohort="slow")
    h.record(1, BASE_GPU_S, cohort="fast")
    queue = [job("slow-2", submit=0, cohort="slow"), job("fast-2", submit=10, cohort="fast")]
    state = ClusterState([node("n0", gpus=1)], history=h)
    assert placed_ids(get_policy("default").schedule(state, queue, 100)) == ["fast-2"]


def test_trace_cohort_column_is_optional() -> None:
    rec = {"submit_time": "0", "duration": "10", "gpus": "1", "cohort": "sweep-1"}
    assert job_from_record(rec, 2, "t.csv").cohort == "sweep-1"
    assert job_from_record({"submit_time": "0", "duration": "10"}, 3, "t.csv").cohort is None


@pytest.mark.parametrize("gap", [0.0, 30.0])
def test_tracker_gap_is_inclusive_and_configurable(gap: float) -> None:
    t = CohortTracker(gap_s=gap)
    assert t.assign("k", "a", 5.0) == "a"
    assert t.assign("k", "b", 5.0 + gap) == "a"
