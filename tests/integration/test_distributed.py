"""Distributed training for real: a deepdock server with namespace hosts as nodes (scripts/netns_hosts.sh),
each its own Docker engine with no route out, and the digits model trained with torch DDP over gloo in
examples/distributed/. The same seed and global batch give the same weights on two hosts as in one
process; killing one rank stops the whole gang and names it; losing a host re-runs the gang on the hosts
left, resumed from its last checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import pytest
from tests.integration.netns import start_engine, stop_engine
from tests.integration.server_process import ServerProcess
from tests.integration.test_server_jobs import TERMINAL, wait_status

from deepdock.api.enums import AttemptNetwork
from deepdock.specs.job import RetrySpec, load_job_spec

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed"
# The env image is built on this machine's engine and copied to each host (~1.3 GB: a minute or more).
FIRST_RUN_TIMEOUT_S = 600
RUN_TIMEOUT_S = 240
WEIGHTS_TOLERANCE = 1e-6
GANG_FAILURE_DEADLINE_S = 10.0
RANK_CPUS = 1.5


@pytest.fixture(scope="module")
def cluster(netns_hosts, tmp_path_factory):
    """A server whose nodes are the namespace hosts (its own engine drained), granted host networking."""
    labels = {"deepdock.test": "distributed"}
    srv = ServerProcess(tmp_path_factory.mktemp("ddp") / "home", labels, DEEPDOCK_TRACKING_INTERVAL_S="0.2",
                        DEEPDOCK_RECONCILE_INTERVAL_S="0.5").start()
    try:
        with srv.client() as c:
            c.drain_node("local")
            for host in netns_hosts:
                c.add_node(host.name, host.engine_url)
            c.set_host_network("default", allowed=True)
        yield srv, netns_hosts
    finally:
        srv.stop()
        for host in netns_hosts:
            api = docker.APIClient(base_url=host.engine_url, timeout=30)
            for container in api.containers(all=True, filters={"label": "deepdock.managed=true"}):
                api.remove_container(container["Id"], force=True)
            api.close()


def ddp_spec(replicas: int, name: str, **env: str):  # type: ignore[no-untyped-def]
    spec = load_job_spec(EXAMPLE / "job.yaml")
    # 1.5 of a host's 2 CPUs: one rank per host (the packer would otherwise put a gang on one node).
    return spec.model_copy(update={"replicas": replicas, "name": name,
                                   "resources": spec.resources.model_copy(update={"cpus": RANK_CPUS}),
                                   "env": {**spec.env, "EPOCHS": "6", **env}})


def final_weights(client, job_id: str, attempt: int = 1) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    return json.loads(b"".join(client.artifact(job_id, f"attempt-{attempt}/rank-0/weights.json")))


def test_ddp_on_two_and_three_hosts_gives_the_weights_of_one_process(cluster):
    srv, hosts = cluster
    addresses = {h.name: h.address for h in hosts}
    with srv.client() as c:
        gangs = {n: c.run(ddp_spec(n, f"ddp-{n}")) for n in (2, 3)}
        one = c.run(ddp_spec(1, "ddp-1"))
        for n, job in gangs.items():
            done = wait_status(c, job.id, TERMINAL, FIRST_RUN_TIMEOUT_S)
            assert done.status == "SUCCEEDED", done.status_reason
            (attempt,) = done.attempt_list
            assert attempt.network == AttemptNetwork.HOST and attempt.master_port is not None
            assert len({r.node for r in attempt.replicas}) == n  # one rank per host
            assert [r.address for r in attempt.replicas] == [addresses[r.node] for r in attempt.replicas]
            log1 = b"".join(c.logs(job.id, rank=1)).decode()
            assert f"rank 1/{n} joined" in log1 and "on dd0" in log1  # gloo on the node's own interface
        alone = wait_status(c, one.id, TERMINAL, RUN_TIMEOUT_S)
        assert alone.status == "SUCCEEDED", alone.status_reason
        assert alone.attempt_list[0].network == AttemptNetwork.NONE
        reference = final_weights(c, one.id)
        for n, job in gangs.items():
            weights = final_weights(c, job.id)
            assert weights.keys() == reference.keys()
            worst = max(abs(x - y) for name in weights for x, y in zip(weights[name], reference[name], strict=True))
            assert worst <= WEIGHTS_TOLERANCE, f"DDP on {n} hosts differs from 1 process by {worst}"


def _running_with_both_joined(client, job_id: str, timeout_s: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        detail = client.job(job_id)
        if detail.status == "RUNNING" and "epoch 0" in b"".join(client.logs(job_id, rank=1)).decode():
            return detail
        assert detail.status not in TERMINAL, detail.status_reason
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not train on both ranks in {timeout_s}s")


def test_killing_one_rank_stops_the_whole_gang_and_names_it(cluster):
    srv, hosts = cluster
    engines = {h.name: h.engine_url for h in hosts}
    with srv.client() as c:
        job = c.run(ddp_spec(2, "ddp-kill", EPOCHS="1000", EPOCH_PAUSE_S="0.5").model_copy(
            update={"retry": RetrySpec(max_retries=0)}))
        detail = _running_with_both_joined(c, job.id, RUN_TIMEOUT_S)
        rank1 = detail.attempt_list[-1].replicas[1]
        api = docker.APIClient(base_url=engines[rank1.node], timeout=30)
        killed_at = time.monotonic()
        api.kill(rank1.container_id)
        api.close()
        ended = wait_status(c, job.id, TERMINAL, GANG_FAILURE_DEADLINE_S * 3)
        took = time.monotonic() - killed_at
    assert ended.status == "FAILED"
    assert f"replica 1 on node {rank1.node}" in ended.status_reason
    assert took <= GANG_FAILURE_DEADLINE_S, f"the gang took {took:.1f}s to end"
    rank0 = ended.attempt_list[-1].replicas[0]
    assert rank0.finished_at is not None and rank0.status == "EXITED"


def test_a_lost_host_reruns_the_gang_on_the_others_from_its_checkpoint(cluster):
    srv, hosts = cluster
    with srv.client() as c:
        job = c.run(ddp_spec(2, "ddp-lose", EPOCHS="12", EPOCH_PAUSE_S="1", CHECKPOINT_EVERY="1"))
        detail = _running_with_both_joined(c, job.id, FIRST_RUN_TIMEOUT_S)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not c.checkpoints(job.id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert c.checkpoints(job.id), "no checkpoint was saved"
        lost = next(h for h in hosts if h.name == detail.attempt_list[-1].replicas[1].node)
        stop_engine(lost)
        try:
            done = wait_status(c, job.id, TERMINAL, FIRST_RUN_TIMEOUT_S)
        finally:
            start_engine(lost)
        assert done.status == "SUCCEEDED", done.status_reason
        first, last = done.attempt_list[0], done.attempt_list[-1]
        assert first.status == "FAILED" and lost.name in first.reason
        assert lost.name not in {r.node for r in last.replicas}
        assert len(last.replicas) == 2  # the same world size on the hosts left
        log0 = b"".join(c.logs(job.id, rank=0, attempt=last.number)).decode()
    assert "rank 0 resumed from epoch" in log0
