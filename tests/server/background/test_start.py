"""The start step (background/start.py): the image on every node of the gang, one container per rank, ids
recorded with ``recorded_at``; start failures end the attempt (and free it) with a clear reason."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

from deepdock.api.enums import AttemptNetwork, AttemptStatus, JobStatus, NodeHealth, ReplicaStatus, StopRequest
from deepdock.compute.base import LABEL_JOB, LABEL_MANAGED, ComputeBackend, ContainerSpec, ContainerState, NodeCapacity
from deepdock.compute.testing.fake import FakeBackend, fake_env_tag
from deepdock.errors import EngineError, EngineUnreachableError
from deepdock.server.background import start
from deepdock.server.db.models import Node
from deepdock.server.services.code import store_code
from deepdock.server.services.distributed import (
    HOST_INTERFACE_PREAMBLE,
    PRIVATE_MASTER_PORT,
    RENDEZVOUS_PORTS,
    attempt_network,
    network_name,
)
from deepdock.server.services.jobs import job_spec
from deepdock.server.services.logs import follow_key
from deepdock.specs.env import EnvSpec
from tests.server.background.test_collect import events_chain, released
from tests.server.factories import make_attempt, make_job

ENV = {"python": "3.11", "accelerator": "cpu", "pip": ["numpy==2.0.0"]}


def scheduled(steps, nodes: list[str], *, master_port: int | None = None, **spec) -> tuple[str, int]:
    """A job the scheduler just placed: SCHEDULED, an attempt with one SCHEDULED replica per node (and
    the network the schedule step would give it)."""
    spec.setdefault("replicas", len(nodes))
    with steps.session() as session:
        job = make_job(session, status=JobStatus.SCHEDULED, **spec)
        network = attempt_network(job_spec(job), nodes)
        if master_port is None and network == AttemptNetwork.HOST:
            master_port = RENDEZVOUS_PORTS.start
        attempt = make_attempt(session, job, nodes, status=AttemptStatus.SCHEDULED, network=network,
                               master_port=master_port)
        return job.id, attempt.id


def start_once(steps) -> int:
    return start.run(steps.ctx, steps.work, steps.observe())


class BareEngine(ComputeBackend):
    """An engine with the protocol only (no ability): runs containers, cannot build, receive or copy."""

    def __init__(self, inner: FakeBackend) -> None:
        self.inner = inner

    def ping(self) -> None:
        self.inner.ping()

    def capacity(self) -> NodeCapacity:
        return self.inner.capacity()

    def run(self, spec: ContainerSpec) -> str:
        return self.inner.run(spec)

    def inspect(self, container_id: str) -> ContainerState:
        return self.inner.inspect(container_id)

    def list_containers(self, labels: dict[str, str]) -> list[ContainerState]:
        return self.inner.list_containers(labels)

    def logs(self, container_id: str, since: float | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes]:
        return self.inner.logs(container_id, since, follow, timestamps)

    def stop(self, container_id: str, grace_s: float) -> None:
        self.inner.stop(container_id, grace_s)

    def remove(self, container_id: str) -> None:
        self.inner.remove(container_id)

    def image_exists(self, ref: str) -> bool:
        return self.inner.image_exists(ref)

    def close(self) -> None:
        self.inner.close()


def test_a_placed_attempt_gets_its_container_and_runs(steps):
    engine = steps.node("a")
    job_id, attempt_id = scheduled(steps, ["a"], env={"MY": "1"})
    steps.clock.advance(5)
    assert start_once(steps) == 1
    attempt = steps.attempt(attempt_id)
    (replica,) = attempt.replicas
    assert attempt.status == AttemptStatus.RUNNING and attempt.started_at == steps.clock()
    assert replica.status == ReplicaStatus.RUNNING and replica.recorded_at == steps.clock()
    (container,) = engine.list_containers({LABEL_JOB: job_id})
    assert container.id == replica.container_id and container.name == replica.container_name
    assert container.labels[LABEL_MANAGED] == "true"
    env = engine.spec_of(container.id).env
    assert env["MY"] == "1" and env["RANK"] == "0" and env["WORLD_SIZE"] == "1"
    job = steps.job(job_id)
    assert job.status == JobStatus.RUNNING and job.image == "busybox:latest"
    assert events_chain(steps, job_id)[-2:] == [JobStatus.STARTING, JobStatus.RUNNING]
    assert [key for key, _ in steps.followers.submitted] == [follow_key(container.id)]
    assert start_once(steps) == 0  # it has its container: never started twice


def test_a_gang_over_two_nodes_starts_one_container_per_rank_on_host_networking(steps):
    a, b = steps.node("a"), steps.node("b")
    with steps.session() as session:
        session.get(Node, steps.node_row("a").id).address = "10.0.0.1"
    job_id, attempt_id = scheduled(steps, ["a", "b"], network="host", master_port=29517,
                                   command=["torchrun", "--nnodes=$DEEPDOCK_NNODES", "--node-rank=${DEEPDOCK_NODE_RANK}",
                                            "--master-port=$MASTER_PORT", "--keep=$HOME", "train.py"])
    start_once(steps)
    r0, r1 = steps.attempt(attempt_id).replicas
    (c0,), (c1,) = a.list_containers({LABEL_JOB: job_id}), b.list_containers({LABEL_JOB: job_id})
    assert (r0.container_id, r1.container_id) == (c0.id, c1.id)
    spec1 = b.spec_of(c1.id)
    env1 = spec1.env
    assert env1["RANK"] == "1" and env1["WORLD_SIZE"] == "2" and env1["LOCAL_RANK"] == "0"
    # Rank 0's node address (given at node add) and the engine URL's host for b.
    assert env1["MASTER_ADDR"] == "10.0.0.1" and env1["MASTER_PORT"] == "29517"
    assert env1["DEEPDOCK_NODE_ADDRS"] == f"10.0.0.1,{env1['DEEPDOCK_NODE_ADDR']}"
    assert env1["DEEPDOCK_NNODES"] == "2" and env1["DEEPDOCK_NODE_RANK"] == "1"
    assert env1["DEEPDOCK_NETWORK"] == "host" and spec1.network == "host" and spec1.hostname is None
    # The platform's variables are expanded in the arguments; others are left for a shell.
    assert spec1.command[:3] == ["/bin/sh", "-c", HOST_INTERFACE_PREAMBLE]
    assert spec1.command[4:] == ["torchrun", "--nnodes=2", "--node-rank=1", "--master-port=29517", "--keep=$HOME",
                                 "train.py"]
    assert steps.job(job_id).status == JobStatus.RUNNING


def test_a_gang_on_one_node_gets_a_private_network_removed_with_it(steps):
    a = steps.node("a")
    job_id, attempt_id = scheduled(steps, ["a", "a"], network="private")
    start_once(steps)
    r0, r1 = steps.attempt(attempt_id).replicas
    name = network_name(job_id, 1)
    assert a.list_networks({LABEL_JOB: job_id}) == [name]
    env1 = a.spec_of(r1.container_id).env
    assert env1["MASTER_ADDR"] == r0.container_name and env1["MASTER_PORT"] == str(PRIVATE_MASTER_PORT)
    assert env1["GLOO_SOCKET_IFNAME"] == "eth0" and env1["DEEPDOCK_NETWORK"] == "private"
    assert a.spec_of(r1.container_id).network == name
    for cid in (r0.container_id, r1.container_id):
        a.finish(cid, 0)
    steps.reconcile()
    assert steps.job(job_id).status == JobStatus.SUCCEEDED
    assert a.list_networks({LABEL_JOB: job_id}) == []


def test_a_rank_that_cannot_start_fails_the_gang_at_once_and_removes_the_started_ranks(steps):
    a = steps.node("a")
    b = steps.node("b")
    b.fail_next("run", EngineError("no space left on device"))
    job_id, _ = scheduled(steps, ["a", "b"], network="host", master_port=29500)
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED and "node b" in job.status_reason
    assert "no space left on device" in job.status_reason
    assert a.list_containers({LABEL_JOB: job_id}) == []  # rank 0 was removed, not left waiting for rank 1
    released(steps, job_id)


def test_the_code_package_is_placed_in_the_workdir(steps):
    engine = steps.node("a")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with steps.session() as session:
        sha = store_code(session, steps.ctx.settings.home, buf.getvalue(), 1 << 20).sha256
    job_id, attempt_id = scheduled(steps, ["a"])
    with steps.session() as session:
        session.get(type(steps.job(job_id)), job_id).code_sha256 = sha
    start_once(steps)
    cid = steps.attempt(attempt_id).replicas[0].container_id
    assert engine.files(cid)["/workspace/train.py"] == b"print('hi')\n"


def test_an_environment_gang_builds_once_and_copies_to_the_other_node(steps):
    a = steps.node("a", builds_environments=False)
    b = steps.node("b", builds_environments=True)
    job_id, attempt_id = scheduled(steps, ["a", "b"], environment=ENV)
    start_once(steps)
    tag = fake_env_tag(EnvSpec.model_validate(ENV))
    assert [x.tag for x in b.builds] == [tag] and a.builds == []  # built once, where builds are possible
    assert a.image_exists(tag) and b.image_exists(tag)  # copied to the other
    r0, r1 = steps.attempt(attempt_id).replicas
    assert a.spec_of(r0.container_id).image == tag and b.spec_of(r1.container_id).image == tag
    job = steps.job(job_id)
    assert job.status == JobStatus.RUNNING and job.image == tag


def test_an_environment_is_built_by_the_hosts_engine_when_no_node_of_the_gang_can(steps):
    a = steps.node("a", builds_environments=False)
    b = steps.node("b", builds_environments=False)
    host = steps.node("builder", register=False)  # the server's own engine, not a node
    steps.ctx.settings.docker_host = "fake://builder"
    job_id, _ = scheduled(steps, ["a", "b"], environment=ENV)
    start_once(steps)
    tag = fake_env_tag(EnvSpec.model_validate(ENV))
    assert len(host.builds) == 1 and a.builds == [] and b.builds == []
    assert a.image_exists(tag) and b.image_exists(tag)
    assert steps.job(job_id).status == JobStatus.RUNNING


def test_a_node_that_cannot_receive_images_fails_the_start_naming_it(steps):
    steps.node("a", builds_environments=True)
    bare = steps.node("b")
    steps.cluster.engines["b"] = BareEngine(bare)  # type: ignore[assignment]
    job_id, attempt_id = scheduled(steps, ["a", "b"], environment=ENV)
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.status_reason.startswith("start_failed: ")
    assert "node b (BareEngine) cannot build or receive environment images" in job.status_reason
    assert steps.attempt(attempt_id).status == AttemptStatus.FAILED
    assert bare.list_containers({}) == [] and steps.engine("a").list_containers({}) == []
    released(steps, job_id)


def test_a_missing_image_fails_with_its_reason(steps):
    steps.node("a", images=())
    job_id, attempt_id = scheduled(steps, ["a"], retry={"max_retries": 3, "on": ["failed", "node_lost"]})
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.status_reason.startswith("image_missing: node a: image busybox:latest is not present")
    assert job.retries_left == 3
    released(steps, job_id)
    events_chain(steps, job_id)


def test_an_unreachable_engine_requeues_without_using_a_retry(steps):
    engine = steps.node("a")
    job_id, attempt_id = scheduled(steps, ["a"], retry={"max_retries": 1, "on": ["failed"]})
    engine.fail_next("run", EngineUnreachableError("container engine fake://a is unreachable"))
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retries_left == 1
    assert job.status_reason == "back in the queue: node a: container engine fake://a is unreachable"
    assert steps.attempt(attempt_id).status == AttemptStatus.FAILED
    assert steps.node_row("a").status == NodeHealth.UNREACHABLE  # no more placements there for now
    released(steps, job_id)
    events_chain(steps, job_id)


def test_an_engine_error_fails_the_start(steps):
    engine = steps.node("a")
    job_id, _ = scheduled(steps, ["a"])
    engine.fail_next("run", EngineError('could not select device driver "nvidia"'))
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.status_reason == 'start_failed: node a: could not select device driver "nvidia"'
    released(steps, job_id)


def test_a_gang_whose_image_is_missing_on_one_node_starts_no_rank(steps):
    a = steps.node("a")
    steps.node("b", images=())
    job_id, _ = scheduled(steps, ["a", "b"])
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.FAILED and "node b: image busybox:latest is not present" in job.status_reason
    assert a.list_containers({LABEL_JOB: job_id}) == []  # checked on every node before any rank starts
    released(steps, job_id)


def test_a_container_made_before_a_restart_is_adopted_not_started_twice(steps):
    engine = steps.node("a")
    job_id, attempt_id = scheduled(steps, ["a"])
    obs = steps.observe()  # listed before the container exists
    existing = steps.container("a", job_id, 1)  # made by a start task whose server died
    start.run(steps.ctx, steps.work, obs)
    assert steps.attempt(attempt_id).replicas[0].container_id == existing
    assert len(engine.list_containers({LABEL_JOB: job_id})) == 1


def test_a_job_asked_to_stop_is_not_started(steps):
    engine = steps.node("a")
    job_id, attempt_id = scheduled(steps, ["a"], stop_requested=StopRequest.USER)
    assert start_once(steps) == 0
    start.start_attempt(steps.ctx, steps.work, attempt_id)  # the scheduler's own hand-off, too
    assert engine.list_containers({}) == []
    assert steps.attempt(attempt_id).replicas[0].container_id is None


def test_attempts_on_unseen_nodes_wait(steps):
    engine = steps.node("a")
    engine.set_unreachable(True)
    job_id, attempt_id = scheduled(steps, ["a"])
    assert start_once(steps) == 0
    assert steps.job(job_id).status == JobStatus.SCHEDULED


def test_a_gang_half_started_before_a_restart_is_completed(steps):
    """The server died after rank 0's container was made and before rank 1's: the next ticks must start
    rank 1 (adopting rank 0's container, never a second one), not leave the gang waiting for ever."""
    a, b = steps.node("a"), steps.node("b")
    job_id, attempt_id = scheduled(steps, ["a", "b"])
    with steps.session() as session:
        session.get(type(steps.job(job_id)), job_id).status = JobStatus.STARTING
    first = steps.container("a", job_id, 1, rank=0)
    steps.reconcile()
    steps.reconcile()
    attempt = steps.attempt(attempt_id)
    assert [r.container_id is not None for r in attempt.replicas] == [True, True]
    assert attempt.replicas[0].container_id == first
    assert len(a.list_containers({LABEL_JOB: job_id})) == 1 and len(b.list_containers({LABEL_JOB: job_id})) == 1
    assert attempt.status == AttemptStatus.RUNNING and steps.job(job_id).status == JobStatus.RUNNING


def test_a_half_started_gang_asked_to_stop_is_ended(steps):
    a = steps.node("a")
    steps.node("b")
    job_id, attempt_id = scheduled(steps, ["a", "b"], stop_requested=StopRequest.USER)
    steps.container("a", job_id, 1, rank=0)
    for _ in range(3):
        steps.reconcile()
    assert steps.job(job_id).status == JobStatus.STOPPED
    assert a.list_containers({}) == []
    released(steps, job_id)


def test_of_two_nodes_that_build_the_one_with_the_base_image_builds(steps):
    from deepdock.envs.compat import resolve

    env = EnvSpec.model_validate(ENV)
    base = resolve(env).base_image
    a = steps.node("a", builds_environments=True)
    b = steps.node("b", builds_environments=True, images=("busybox:latest", base))
    job_id, _ = scheduled(steps, ["a", "b"], environment=ENV)
    start_once(steps)
    tag = fake_env_tag(env)
    assert a.builds == [] and [x.tag for x in b.builds] == [tag]  # b needs no base bootstrap first
    assert a.image_exists(tag) and steps.job(job_id).status == JobStatus.RUNNING


def test_a_node_lost_during_a_gang_start_requeues_the_gang_and_removes_what_started(steps):
    a = steps.node("a")
    b = steps.node("b")
    b.fail_next("run", EngineUnreachableError("engine fake://b did not answer"))
    job_id, _ = scheduled(steps, ["a", "b"])
    start_once(steps)
    job = steps.job(job_id)
    assert job.status == JobStatus.QUEUED and "node b" in job.status_reason  # nothing ran: back in line
    assert steps.node_row("b").status == NodeHealth.UNREACHABLE
    assert a.list_containers({LABEL_JOB: job_id}) == []
    released(steps, job_id)
