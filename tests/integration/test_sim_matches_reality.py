"""The simulator predicts what the real server does: same jobs, same two nodes, same policy object type
→ the same order of starts and the same node for every job (time-scaled sleep jobs on real Docker)."""

from __future__ import annotations

import time

import pytest
from tests.integration.server_process import ServerProcess

from deepdock.compute.docker import DockerBackend
from deepdock.scheduler import get_policy
from deepdock.scheduler.types import NodeState, Resources
from deepdock.sim.simulator import simulate
from deepdock.sim.trace import TraceJob
from deepdock.specs.job import JobSpec

pytestmark = pytest.mark.docker

MEMORY = 32 * 1024**2
# (cpus, seconds of sleep). Both nodes have the same CPU count (one machine), so these are fractions of it.
JOBS = [(1.0, 8), (1.0, 12), (0.5, 8), (0.5, 12), (1.0, 12), (0.5, 20), (0.5, 14)]
# A real job holds its resources for its sleep plus container start, log capture and removal: about a
# second here, modelled in the simulation. Completions closer than MIN_EVENT_GAP_S could swap.
LIFECYCLE_OVERHEAD_S = 1.0
MIN_EVENT_GAP_S = 2.0
SUBMIT_SPACING_S = 0.3


def _trace(node_cpus: float) -> list[TraceJob]:
    return [
        TraceJob(id=f"j{i}", submit_time=i * SUBMIT_SPACING_S, duration=d + LIFECYCLE_OVERHEAD_S,
                 resources=Resources(cpus=c * node_cpus, memory=MEMORY))
        for i, (c, d) in enumerate(JOBS)
    ]


def test_order_and_placement_of_starts_match_the_simulator(tmp_path, labelled_cleanup, second_engine, busybox_image):
    capacities = {name: DockerBackend(url).capacity() for name, url in (("engine2", second_engine), ("local", ""))}
    cpus = min(c.cpus for c in capacities.values())
    nodes = [NodeState(name=name, cpus=cap.cpus, memory=cap.memory) for name, cap in sorted(capacities.items())]
    trace = _trace(cpus)
    predicted = simulate(trace, nodes, get_policy("default"))
    # Completions are where real timing jitters: no completion may be near another event.
    ends = [r.end_time for r in predicted.jobs.values()]
    others = [t for r in predicted.jobs.values() for t in (r.submit_time, r.end_time)]
    near = [(e, o) for e in ends for o in others if 1e-6 < abs(e - o) < MIN_EVENT_GAP_S]
    assert not near, f"the trace itself has near-ties: {near}"
    expected_order = [r.id for r in sorted(predicted.jobs.values(), key=lambda r: (r.start_time, r.id))]
    expected_nodes = {r.id: r.placements[0].node for r in predicted.jobs.values()}

    server = ServerProcess(tmp_path / "home", labelled_cleanup, DEEPDOCK_SCHEDULER_POLICY="default").start()
    try:
        with server.client() as client:
            client.add_node("engine2", second_engine)
            ids: dict[str, str] = {}
            t0 = time.monotonic()
            for job in trace:
                time.sleep(max(0.0, job.submit_time - (time.monotonic() - t0)))
                spec = JobSpec.model_validate({
                    "name": job.id, "image": busybox_image, "command": ["sleep", str(int(job.duration - LIFECYCLE_OVERHEAD_S))],
                    "resources": {"cpus": job.resources.cpus, "memory": MEMORY, "pids": 32},
                })
                ids[job.id] = client.submit(spec).id
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                details = {name: client.job(job_id) for name, job_id in ids.items()}
                if all(d.status in ("SUCCEEDED", "FAILED", "STOPPED") for d in details.values()):
                    break
                time.sleep(0.5)
    finally:
        server.stop()
    assert all(d.status == "SUCCEEDED" for d in details.values()), {k: d.status_reason for k, d in details.items()}
    # Order of placement decisions (SCHEDULED), which is what the policy decides; start-up jitter is not.
    placed_at = {name: next(e.at for e in d.events if e.to_status == "SCHEDULED") for name, d in details.items()}
    real_order = sorted(placed_at, key=lambda name: (placed_at[name], name))
    real_nodes = {name: d.attempt_list[0].replicas[0].node for name, d in details.items()}
    first = min(d.submitted_at for d in details.values())
    timeline = {name: (round(placed_at[name] - first, 1), round(d.finished_at - first, 1), real_nodes[name])
                for name, d in details.items()}
    predicted_timeline = {r.id: (r.start_time, r.end_time, r.placements[0].node) for r in predicted.jobs.values()}
    assert real_order == expected_order, (timeline, predicted_timeline)
    assert real_nodes == expected_nodes, (timeline, predicted_timeline)
