"""services/nodes.py: registering engines (probed outside any transaction), the status users see, the
admin's drain kept apart from health, allocations, and removal."""

from __future__ import annotations

import pytest

from deepdock.api.enums import JobStatus, NodeHealth, NodeStatus
from deepdock.errors import ConflictError, EngineError, NotFoundError, PermissionDeniedError, SpecError
from deepdock.server.db.models import Node
from deepdock.server.services import nodes as node_service
from deepdock.server.services.nodes import (
    allocations,
    gpu_holders,
    mark_unreachable,
    node_out,
    schedulable,
    set_node_status,
)
from tests.server.factories import GIB, make_attempt, make_job, make_node, make_user


def admin(session):
    return make_user(session)


def test_add_node_probes_the_engine_and_stores_its_capacity(steps):
    steps.node("a", cpus=16, gpus=2, gpu_memory_gib=40, register=False)
    with steps.session() as session:
        actor = admin(session)
    out = node_service.add_node(steps.db.session, steps.ctx.pool, actor, "a", "fake://a", labels={"zone": "x"})
    assert (out.status, out.health, out.draining) == (NodeStatus.READY, NodeHealth.READY, False)
    assert out.cpus == 16 and [g.memory for g in out.gpus] == [40 * GIB, 40 * GIB]
    node = steps.node_row("a")
    assert node.labels == {"zone": "x"} and node.engine_version == "fake"


def test_add_node_refuses_bad_names_duplicates_silent_engines_and_non_admins(steps):
    engine = steps.node("a", register=False)
    with steps.session() as session:
        actor = admin(session)
        user = make_user(session, "bob", is_admin=False)
    with pytest.raises(SpecError):
        node_service.add_node(steps.db.session, steps.ctx.pool, actor, "Bad Name", "fake://a")
    with pytest.raises(PermissionDeniedError):
        node_service.add_node(steps.db.session, steps.ctx.pool, user, "a", "fake://a")
    engine.set_unreachable(True)
    with pytest.raises(EngineError, match="node a: engine fake://a did not answer"):
        node_service.add_node(steps.db.session, steps.ctx.pool, actor, "a", "fake://a")
    with steps.session() as session:
        assert session.query(Node).count() == 0
    steps.node("a", register=False)  # the pool closed the silent engine's backend: a new one answers
    node_service.add_node(steps.db.session, steps.ctx.pool, actor, "a", "fake://a")
    with pytest.raises(ConflictError):
        node_service.add_node(steps.db.session, steps.ctx.pool, actor, "a", "fake://a")


@pytest.mark.parametrize(("health", "draining", "shown"), [
    (NodeHealth.READY, False, NodeStatus.READY),
    (NodeHealth.READY, True, NodeStatus.DRAINING),
    (NodeHealth.UNREACHABLE, False, NodeStatus.UNREACHABLE),
    (NodeHealth.UNREACHABLE, True, NodeStatus.UNREACHABLE),
])
def test_the_status_users_see_and_whether_the_scheduler_may_place(steps, health, draining, shown):
    with steps.session() as session:
        node = make_node(session, "a", status=health, draining=draining)
        out = node_out(node, {})
    assert (out.status, out.health, out.draining) == (shown, health, draining)
    assert schedulable(node) == (health == NodeHealth.READY and not draining)


def test_drain_and_undrain_touch_only_the_drain(steps):
    with steps.session() as session:
        make_node(session, "a", status=NodeHealth.UNREACHABLE)
    with steps.session() as session:
        out = set_node_status(session, admin(session), "a", NodeStatus.DRAINING)
    assert out.draining and out.health == NodeHealth.UNREACHABLE
    node = steps.node_row("a")
    assert node.draining and node.status == NodeHealth.UNREACHABLE
    with steps.session() as session:
        out = set_node_status(session, admin(session), "a", NodeStatus.READY)
    assert not out.draining and steps.node_row("a").status == NodeHealth.UNREACHABLE  # health is not the admin's


def test_health_cannot_be_asked_for_and_unknown_nodes_are_404(steps):
    with steps.session() as session:
        make_node(session, "a")
        actor = admin(session)
        bob = make_user(session, "bob", is_admin=False)
        with pytest.raises(SpecError, match="'ready' or 'draining'"):
            set_node_status(session, actor, "a", NodeStatus.UNREACHABLE)
        with pytest.raises(NotFoundError):
            set_node_status(session, actor, "nope", NodeStatus.DRAINING)
        with pytest.raises(PermissionDeniedError):
            set_node_status(session, bob, "a", NodeStatus.DRAINING)


def test_allocations_count_active_replicas_only(steps):
    with steps.session() as session:
        make_node(session, "a", gpus=2)
        whole = make_job(session, status=JobStatus.RUNNING, resources={"cpus": 2, "memory": "4g", "gpus": 1})
        make_attempt(session, whole, ["a"], container_ids=["c1"], gpu_indices=[[0]])
        share = make_job(session, status=JobStatus.RUNNING, resources={"cpus": 1, "memory": "1g", "gpus": 0.25})
        make_attempt(session, share, ["a"], container_ids=["c2"], gpu_indices=[[1]], gpu_share=0.25)
        done = make_job(session, status=JobStatus.SUCCEEDED, resources={"cpus": 4})
        attempt = make_attempt(session, done, ["a"], container_ids=["c3"])
        attempt.replicas[0].active = False
        used = allocations(session)
        assert used == {"a": {"cpus": 3.0, "memory": 5 * GIB, "gpu_used": {0: 1.0, 1: 0.25}}}
        holders = gpu_holders(session)
        assert holders == {"a": {0: [{"job": whole.id, "project": "default", "share": 1.0}],
                                 1: [{"job": share.id, "project": "default", "share": 0.25}]}}
        out = node_out(session.query(Node).one(), {"a": {**used["a"], "gpu_holders": holders["a"]}})
        assert (out.allocated_cpus, out.allocated_memory, out.allocated_gpus) == (3.0, 5 * GIB, 1.25)
        assert [[h.job for h in g.holders] for g in out.gpus] == [[whole.id], [share.id]]
        # another project's viewer sees the shares, not whose they are
        hidden = gpu_holders(session, visible=[])
        assert hidden["a"][1] == [{"job": "", "project": "", "share": 0.25}]


def test_a_busy_node_is_removed_only_by_force(steps):
    steps.node("a")
    steps.running_job(["a"])
    with steps.session() as session, pytest.raises(ConflictError, match="runs 1 job replica"):
        node_service.remove_node(session, steps.ctx.pool, admin(session), "a")
    with steps.session() as session:
        node_service.remove_node(session, steps.ctx.pool, admin(session), "a", force=True)
    with steps.session() as session:
        assert session.query(Node).count() == 0


def test_mark_unreachable_keeps_the_first_time(steps):
    with steps.session() as session:
        make_node(session, "a")
    mark_unreachable(steps.db, "a", "first", 10.0)
    mark_unreachable(steps.db, "a", "second", 20.0)
    mark_unreachable(steps.db, "nope", "no such node: nothing happens", 30.0)
    node = steps.node_row("a")
    assert (node.status, node.unreachable_since, node.last_error) == (NodeHealth.UNREACHABLE, 10.0, "second")
