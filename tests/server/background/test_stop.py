"""The stop step (background/stop.py): inspect, then write ``stop_sent_at``, then SIGTERM."""

from __future__ import annotations

from deepdock.api.enums import ReplicaStatus, StopRequest
from deepdock.errors import EngineUnreachableError, NotFoundError
from deepdock.server.background import stop
from deepdock.server.background.observe import Observation


def test_a_stop_request_signals_the_running_container(steps):
    engine = steps.node("a")
    job_id, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.USER)
    obs = steps.observe()
    assert stop.run(steps.ctx, steps.work, obs) == 1
    (replica,) = steps.attempt(attempt_id).replicas
    assert replica.stop_sent_at == steps.clock()
    state = engine.inspect(cid)
    assert state.finished and state.exit_code == 143
    # Signalled once: the next tick submits nothing for it.
    assert stop.run(steps.ctx, steps.work, steps.observe()) == 0


def test_stop_sent_at_is_written_before_the_signal(steps):
    engine = steps.node("a")
    _, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.PREEMPTED)
    seen_at_signal: list[float | None] = []
    signal = engine.stop

    def stop_and_look(container_id: str, grace_s: float) -> None:
        seen_at_signal.append(steps.attempt(attempt_id).replicas[0].stop_sent_at)
        signal(container_id, grace_s)

    engine.stop = stop_and_look  # type: ignore[method-assign]
    stop.run(steps.ctx, steps.work, steps.observe())
    assert seen_at_signal == [steps.clock()], "the row must say the stop was sent before SIGTERM goes out"


def test_a_container_that_already_exited_is_not_signalled(steps):
    engine = steps.node("a")
    _, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.PREEMPTED)
    obs = steps.observe()  # sees it running
    engine.finish(cid, 0)  # it ends on its own before the stop task looks
    signals: list[str] = []
    engine.stop = lambda container_id, grace_s: signals.append(container_id)  # type: ignore[method-assign]
    assert stop.run(steps.ctx, steps.work, obs) == 1
    assert signals == []
    assert steps.attempt(attempt_id).replicas[0].stop_sent_at is None
    assert engine.inspect(cid).exit_code == 0


def test_a_failed_signal_is_unmarked_and_tried_again(steps):
    engine = steps.node("a")
    _, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.USER)
    engine.fail_next("stop", EngineUnreachableError("engine fake://a is unreachable"))
    stop.run(steps.ctx, steps.work, steps.observe())
    assert steps.attempt(attempt_id).replicas[0].stop_sent_at is None
    assert engine.inspect(cid).running
    assert stop.run(steps.ctx, steps.work, steps.observe()) == 1
    assert steps.attempt(attempt_id).replicas[0].stop_sent_at is not None
    assert engine.inspect(cid).exit_code == 143


def test_an_inspect_error_sends_nothing(steps):
    engine = steps.node("a")
    _, attempt_id, (cid,) = steps.running_job(stop_requested=StopRequest.USER)
    engine.fail_next("inspect", NotFoundError("gone"))
    stop.run(steps.ctx, steps.work, steps.observe())
    assert steps.attempt(attempt_id).replicas[0].stop_sent_at is None
    assert engine.inspect(cid).running


def test_the_grace_comes_from_the_spec_or_the_settings(steps):
    engine = steps.node("a")
    _, _, (with_spec,) = steps.running_job(stop_requested=StopRequest.USER, stop_grace=7)
    _, _, (default,) = steps.running_job(stop_requested=StopRequest.USER)
    engine.ignore_sigterm(with_spec)
    engine.ignore_sigterm(default)
    stop.run(steps.ctx, steps.work, steps.observe())
    # Killed once the grace is over: the fake dates the end at now + grace.
    assert engine.inspect(with_spec).finished_at == steps.clock() + 7
    assert engine.inspect(default).finished_at == steps.clock() + steps.ctx.settings.stop_grace_s


def test_jobs_without_a_stop_request_and_unseen_nodes_are_left_alone(steps):
    engine = steps.node("a")
    _, _, (running,) = steps.running_job()
    _, attempt_id, (stopping,) = steps.running_job(stop_requested=StopRequest.USER)
    assert stop.run(steps.ctx, steps.work, Observation()) == 0  # node a not in this tick's observation
    assert stop.run(steps.ctx, steps.work, steps.observe()) == 1
    assert engine.inspect(running).running
    assert engine.inspect(stopping).finished


def test_only_running_replicas_are_signalled(steps):
    engine = steps.node("a")
    steps.node("b")
    job_id, attempt_id, (c0, c1) = steps.running_job(["a", "b"])
    engine.finish(c0, 2)
    steps.observe()  # replica 0 EXITED: the gang rule asks for a stop of the others
    assert steps.job(job_id).stop_requested == StopRequest.GANG
    assert stop.run(steps.ctx, steps.work, steps.observe()) == 1
    r0, r1 = steps.attempt(attempt_id).replicas
    assert r0.status == ReplicaStatus.EXITED and r0.stop_sent_at is None
    assert r1.stop_sent_at is not None and steps.engine("b").inspect(c1).exit_code == 143
