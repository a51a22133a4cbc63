"""The start step: make the image present on every node of a placed attempt, then one container per rank.

The step itself only finds attempts that lack containers (after a restart, or when the scheduler's
own hand-off was lost) and submits a start task per attempt; the task does the I/O outside any
transaction and writes the container ids (with ``recorded_at``) in one fenced transaction at the end.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import select

from deepdock.api.enums import AttemptNetwork, AttemptStatus, FailureReason, JobStatus, ReplicaStatus
from deepdock.compute.abilities import ImageProvision, Networking, ability, copy_image
from deepdock.compute.base import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_NODE,
    ComputeBackend,
    ContainerSpec,
    ImageDetails,
    VolumeMount,
)
from deepdock.compute.pool import NodeConnection, node_kind
from deepdock.compute.workspace import ARTIFACTS_SUBDIR, workspace_archive
from deepdock.errors import ConflictError, DeepdockError, EngineUnreachableError, ImageMissingError, NotFoundError
from deepdock.server.background.observe import Observation, start_key
from deepdock.server.background.tasks import Work
from deepdock.server.context import AppContext, log
from deepdock.server.db.models import Attempt, Job, Node
from deepdock.server.services import lifecycle
from deepdock.server.services.attempts import Outcome, finish_attempt
from deepdock.server.services.checkpoints import CHECKPOINT_SUBDIR, checkpoint_folder, latest_checkpoint
from deepdock.server.services.code import read_code
from deepdock.server.services.distributed import (
    NO_PORT_REASON,
    PRIVATE_MASTER_PORT,
    expand_command,
    launch_command,
    network_name,
    node_address,
    rank_env,
    remove_gang_network,
)
from deepdock.server.services.jobfiles import python_path, sdk_files
from deepdock.server.services.jobs import job_spec
from deepdock.server.services.logs import follow_key, follow_logs
from deepdock.server.services.nodes import mark_unreachable
from deepdock.server.services.volumes import engine_volume_name, ensure_project_volumes
from deepdock.specs.job import JobSpec

LABEL_RANK = "deepdock.rank"
NETWORK_HOST = "host"
# Engine calls a gang start makes at once (one per rank, up to this many).
MAX_PARALLEL_STARTS = 32
# The pool entry of this host's own engine, which builds environments for nodes that cannot (a node
# name can never start with '_').
HOST_BUILDER = "_host-builder"
# The label an environment image carries its lock's hash in (envs/dockerfile.py standard_labels).
ENV_LOCK_LABEL = "deepdock.env.lock"


class StartFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def run(ctx: AppContext, work: Work, obs: Observation) -> int:
    """Submit a start task for each SCHEDULED attempt with a container that does not exist yet."""
    with ctx.db.session() as session:
        attempts = session.scalars(
            select(Attempt).join(Job, Job.id == Attempt.job_id)
            .where(Attempt.status == AttemptStatus.SCHEDULED, Attempt.finished_at.is_(None),
                   Job.stop_requested.is_(None))
        ).all()
        # Also a gang only partly started (the server died between ranks): the task adopts the containers
        # that exist (their names are taken) and starts the rest.
        ids = [(a.id, a.replicas[0].node_name) for a in attempts
               if all(obs.seen(r.node_name) for r in a.replicas)
               and any(r.container_id is None and obs.container(r) is None for r in a.replicas)]
    return sum(submit_start(ctx, work, attempt_id, node) for attempt_id, node in ids)


def submit_start(ctx: AppContext, work: Work, attempt_id: int, node: str) -> bool:
    """In the lane of the rank-0 node, so that starts on a frozen engine hold up only that engine's lane."""
    return work.engine.submit(start_key(attempt_id), start_attempt, ctx, work, attempt_id, lane=node) is not None


def start_attempt(ctx: AppContext, work: Work, attempt_id: int) -> None:
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or attempt.finished_at is not None:
            return
        job = session.get(Job, attempt.job_id)
        assert job is not None
        if job.stop_requested is not None:
            return  # the collect step ends an attempt that was stopped before it started
        if job.status == JobStatus.SCHEDULED:
            lifecycle.transition(session, job, JobStatus.STARTING, "preparing image and containers",
                                 attempt=attempt.number, at=ctx.clock())
        names = [r.node_name for r in attempt.replicas]
        nodes = {n.name: n for n in session.scalars(select(Node).where(Node.name.in_(names)))}
        checkpoint = latest_checkpoint(session, job.id)
        resume = (checkpoint.key, checkpoint.name) if checkpoint is not None and checkpoint.key else None
        session.expunge_all()
    try:
        image, started, details = _start_containers(ctx, job, attempt, nodes, resume)
    except StartFailed as failed:
        _finish(ctx, attempt_id, failed.outcome)
        return
    _record(ctx, work, attempt_id, image, started, nodes, details)


def _start_containers(ctx: AppContext, job: Job, attempt: Attempt, nodes: dict[str, Node],
                      resume: tuple[str, str] | None) -> tuple[str, dict[int, str], ImageDetails]:
    spec = job_spec(job)
    try:
        image = _provide_image(ctx, job, spec, [nodes[r.node_name] for r in attempt.replicas])
        code = read_code(ctx.settings.home, job.code_sha256) if job.code_sha256 else None
    except DeepdockError as exc:
        raise StartFailed(_failure(ctx, exc, "")) from None
    details = _image_details(ctx.backend(nodes[attempt.replicas[0].node_name]), image)
    extra = dict(sdk_files())
    resumed_from = None
    if resume is not None:
        try:
            extra[f"{CHECKPOINT_SUBDIR}/{resume[1]}"] = ctx.artifacts.get_bytes(resume[0])
            resumed_from = resume[1]
        except NotFoundError:
            log.warning("checkpoint %s of job %s is gone from the artifact store; starting without it", resume[1], job.id)
        except DeepdockError as exc:
            raise StartFailed(_failure(ctx, exc, "")) from None
    archive = workspace_archive(code, extra)
    gang = _gang_network(ctx, job, attempt, nodes)
    named = [v.source for v in spec.volumes if not v.is_bind]
    for node in {r.node_name: nodes[r.node_name] for r in attempt.replicas}.values():
        try:
            ensure_project_volumes(ctx.backend(node), node.name, job.project, named, ctx.settings.container_labels)
        except DeepdockError as exc:
            _undo_network(ctx, gang, nodes)
            raise StartFailed(_failure(ctx, exc, node.name)) from None
    containers = {r.rank: (nodes[r.node_name], _container_spec(
        ctx, job, spec, attempt, r.rank, r.container_name, image, archive, r.node_name, list(r.gpu_indices or []),
        r.gpu_share, resumed_from, gang)) for r in attempt.replicas}
    started, failed = _run_all(ctx, containers)
    if failed is not None:
        # All or nothing: a rank that cannot start ends the attempt at once, and the ranks that did start
        # are removed now rather than left waiting for peers that will never come.
        for rank, container_id in started.items():
            _remove_quietly(ctx.backend(containers[rank][0]), container_id)
        _undo_network(ctx, gang, nodes)
        failed_node, error = failed
        raise StartFailed(_failure(ctx, error, failed_node))
    return image, started, details


def _run_all(ctx: AppContext, containers: dict[int, tuple[Node, ContainerSpec]]
             ) -> tuple[dict[int, str], tuple[str, DeepdockError] | None]:
    """Every rank's container at once (each engine call in its own thread), so the gang starts together.
    Returns the ids started and the first failure (its node and error), if any."""

    def run_one(node: Node, container: ContainerSpec) -> str:
        backend = ctx.backend(node)
        try:
            return backend.run(container)
        except ConflictError:
            # The name is taken: we started it before a restart. Adopt it, never start a second one.
            return backend.inspect(container.name).id

    started: dict[int, str] = {}
    failed: tuple[str, DeepdockError] | None = None
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(containers)),
                            thread_name_prefix="deepdock-start") as pool:
        futures = {rank: pool.submit(run_one, node, container) for rank, (node, container) in containers.items()}
        for rank, future in sorted(futures.items()):
            try:
                started[rank] = future.result()
            except DeepdockError as exc:
                failed = failed or (containers[rank][0].name, exc)
    return started, failed


def _remove_quietly(backend: ComputeBackend, container_id: str) -> None:
    try:
        backend.remove(container_id)
    except DeepdockError as exc:
        log.warning("removing %s after a failed gang start: %s (collect removes it later)", container_id[:12], exc.message)


@dataclass(frozen=True)
class GangNetwork:
    """Where the ranks of one attempt find each other (services/distributed.py)."""

    mode: AttemptNetwork
    # The container's network: None (no network), "host", or the private network's name.
    container_network: str | None
    addresses: list[str]  # of each rank, by rank
    master_port: int


def _gang_network(ctx: AppContext, job: Job, attempt: Attempt, nodes: dict[str, Node]) -> GangNetwork:
    mode = AttemptNetwork(attempt.network or AttemptNetwork.NONE)
    ranks = sorted(attempt.replicas, key=lambda r: r.rank)
    if mode == AttemptNetwork.HOST:
        if attempt.master_port is None:
            raise StartFailed(Outcome(AttemptStatus.FAILED, NO_PORT_REASON, FailureReason.START_FAILED, requeue=True))
        return GangNetwork(mode, NETWORK_HOST, [node_address(nodes[r.node_name]) for r in ranks], attempt.master_port)
    addresses = [r.container_name for r in ranks]
    if mode == AttemptNetwork.NONE:
        return GangNetwork(mode, None, addresses, PRIVATE_MASTER_PORT)
    name = network_name(job.id, attempt.number)
    node = nodes[ranks[0].node_name]
    labels = {**ctx.settings.container_labels, LABEL_MANAGED: "true", LABEL_JOB: job.id,
              LABEL_ATTEMPT: str(attempt.number)}
    try:
        # A published network cannot be isolated: the node forwards its ports into it.
        ability(ctx.backend(node), Networking, node.name).create_network(
            name, labels, isolated=mode == AttemptNetwork.PRIVATE)
    except DeepdockError as exc:
        raise StartFailed(_failure(ctx, exc, node.name)) from None
    return GangNetwork(mode, name, addresses, PRIVATE_MASTER_PORT)


def _undo_network(ctx: AppContext, gang: GangNetwork, nodes: dict[str, Node]) -> None:
    if gang.mode not in (AttemptNetwork.PRIVATE, AttemptNetwork.PUBLISHED) or gang.container_network is None:
        return
    for node in nodes.values():
        remove_gang_network(ctx.backend(node), node.name, gang.container_network)


def _image_details(backend: ComputeBackend, image: str) -> ImageDetails:
    """Lineage only: never a reason to fail a start (a missing image fails the run itself, naming its node)."""
    try:
        return backend.image_details(image)
    except DeepdockError as exc:
        log.warning("could not read the digest of %s: %s", image, exc.message)
        return ImageDetails(id="", labels={})


def _failure(ctx: AppContext, exc: DeepdockError, node: str) -> Outcome:
    where = f"node {node}: " if node else ""
    if isinstance(exc, EngineUnreachableError):
        if node:
            mark_unreachable(ctx.db, node, exc.message, ctx.clock())
        # Nothing of the job ran: back in line (the scheduler no longer places on that node).
        return Outcome(AttemptStatus.FAILED, f"{where}{exc.message}", FailureReason.START_FAILED, requeue=True)
    if isinstance(exc, ImageMissingError):
        return Outcome(AttemptStatus.FAILED, f"{where}{exc.message}", FailureReason.IMAGE_MISSING)
    return Outcome(AttemptStatus.FAILED, f"{where}{exc.message}", FailureReason.START_FAILED)


def _provide_image(ctx: AppContext, job: Job, spec: JobSpec, nodes: list[Node]) -> str:
    """The job's image, present on every node of the gang: the spec's image as it is (it must be there:
    deepdock never pulls), or its environment's content-addressed tag, built once and copied over."""
    if spec.environment is None:
        assert spec.image is not None
        for node in {n.name: n for n in nodes}.values():
            # Present on every node before any rank starts (deepdock never pulls from a registry, but an
            # image this host's own engine has - a serving image it built - is copied over, as for envs).
            try:
                backend = ctx.backend(node)
                present = backend.image_exists(spec.image)
                # Only an engine of the host's own kind can take the host's images (a fake node cannot).
                if not present and node_kind(node.engine_url) == node_kind(ctx.settings.docker_host):
                    host = ctx.pool.get(NodeConnection(name=HOST_BUILDER, engine_url=ctx.settings.docker_host))
                    present = _has_image(host, spec.image) and (copy_image(host, backend, spec.image, node=node.name)
                                                                or True)
            except DeepdockError as exc:
                raise StartFailed(_failure(ctx, exc, node.name)) from None
            if not present:
                raise ImageMissingError(f"node {node.name}: image {spec.image} is not present (deepdock never "
                                        "pulls; load it on every node the job may run on)",
                                        details={"image": spec.image, "node": node.name})
        return spec.image
    if isinstance(spec.environment, str):
        raise ImageMissingError(f"environment {spec.environment!r} was not resolved to a spec at submit")
    distinct = list({n.name: n for n in nodes}.values())
    backends = [(n.name, ctx.backend(n)) for n in distinct]
    builders = [(name, b) for name, b in backends if isinstance(b, ImageProvision) and b.builds_environments]
    if len(builders) > 1:
        # Several engines of this host in the gang: one that has the environment's base image builds.
        # Another would bootstrap a base of its own from Debian packages first (a minute or more).
        from deepdock.envs.compat import resolve

        base = resolve(spec.environment, pytorch_index_url=ctx.settings.pytorch_index_url).base_image
        builders.sort(key=lambda nb: not _has_image(nb[1], base))
    builder_name, builder = builders[0] if builders else (
        HOST_BUILDER, ctx.pool.get(NodeConnection(name=HOST_BUILDER, engine_url=ctx.settings.docker_host)))
    tag = ability(builder, ImageProvision, builder_name).build_environment(spec.environment)
    targets = [(name, backend) for name, backend in backends if backend is not builder]
    if targets:
        # Every node at once (no registry between them: save -> load per engine, ~30 s per GB each).
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(targets)),
                                thread_name_prefix="deepdock-image") as pool:
            copies = {name: pool.submit(copy_image, builder, backend, tag, node=name) for name, backend in targets}
            for name, future in copies.items():
                try:
                    future.result()
                except DeepdockError as exc:  # named by its node, which is marked unreachable if it was
                    raise StartFailed(_failure(ctx, exc, name)) from None
    return tag


def _has_image(backend: ComputeBackend, ref: str) -> bool:
    try:
        return backend.image_exists(ref)
    except DeepdockError:
        return False


def _container_spec(ctx: AppContext, job: Job, spec: JobSpec, attempt: Attempt, rank: int, name: str, image: str,
                    archive: bytes, node: str, gpu_indices: list[int], gpu_share: float,
                    resumed_from: str | None, gang: GangNetwork) -> ContainerSpec:
    workdir = spec.workdir
    env = dict(spec.env)
    if not spec.ports:
        # Not for a serving replica: it runs its image's own server, whose deepdock package the SDK's
        # (a `deepdock` of the SDK alone) would shadow; the image's PYTHONPATH stays.
        env["PYTHONPATH"] = python_path(workdir, spec.env.get("PYTHONPATH"))
    # The SDK hashes the read-only ones for the lineage of the job's models (sdk/data.py).
    env["DEEPDOCK_DATA_MOUNTS"] = json.dumps([{"target": v.target, "source": v.source, "read_only": v.read_only,
                                               "kind": "bind" if v.is_bind else "volume"} for v in spec.volumes])
    if resumed_from:
        env["DEEPDOCK_RESUMED_FROM"] = resumed_from
    env.update({
        "DEEPDOCK_JOB_ID": job.id,
        "DEEPDOCK_JOB_NAME": job.name,
        "DEEPDOCK_ATTEMPT": str(attempt.number),
        "DEEPDOCK_ARTIFACTS_DIR": f"{workdir.rstrip('/')}/{ARTIFACTS_SUBDIR}",
        "DEEPDOCK_CHECKPOINT_DIR": checkpoint_folder(workdir),
        "DEEPDOCK_STOP_GRACE_S": f"{spec.stop_grace if spec.stop_grace is not None else ctx.settings.stop_grace_s:g}",
    })
    # torchrun's variables, so `torch.distributed.init_process_group("env://")` works as is.
    platform = rank_env(spec, gang.mode, rank, gang.addresses, gang.master_port, name)
    env.update(platform)
    command = launch_command(expand_command(spec.command, platform), gang.mode)
    return ContainerSpec(
        name=name,
        image=image,
        command=command,
        env=env,
        labels={**ctx.settings.container_labels, LABEL_MANAGED: "true", LABEL_JOB: job.id,
                LABEL_ATTEMPT: str(attempt.number), LABEL_NODE: node, LABEL_RANK: str(rank)},
        cpus=spec.resources.cpus,
        memory=spec.resources.memory,
        pids_limit=spec.resources.pids,
        shm_size=spec.resources.shm_size,
        gpu_indices=gpu_indices,
        gpu_share=gpu_share,
        workdir=workdir,
        # A named volume is the project's own (services/volumes.py); a bind passed the grants at submit.
        volumes=[VolumeMount(v.source if v.is_bind else engine_volume_name(job.project_id, v.source), v.target,
                             v.read_only) for v in spec.volumes],
        code_archive=archive,
        network=gang.container_network,
        ports=list(spec.ports),
        # A host-network container has the node's own name (docker refuses another).
        hostname=None if gang.mode == AttemptNetwork.HOST else name,
    )


def _finish(ctx: AppContext, attempt_id: int, outcome: Outcome) -> None:
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, attempt.job_id) if attempt else None
        if attempt is None or job is None or job.status in lifecycle.TERMINAL or attempt.finished_at is not None:
            return
        log.warning("starting job %s attempt %s failed: %s", job.id, attempt.number, outcome.reason)
        finish_attempt(session, job, attempt, outcome, now=ctx.clock(), backoff=ctx.backoff)
    ctx.wake_scheduler.set()


def _record(ctx: AppContext, work: Work, attempt_id: int, image: str, started: dict[int, str],
            nodes: dict[str, Node], details: ImageDetails) -> None:
    """Write the container ids; from now on the observe step judges the replicas."""
    at = ctx.clock()
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, attempt.job_id) if attempt else None
        if attempt is None or job is None or attempt.finished_at is not None:
            return  # ended meanwhile (its node was lost): what we started is a stray, removed by collect
        for replica in attempt.replicas:
            replica.container_id = started[replica.rank]
            replica.recorded_at = at
            replica.status = ReplicaStatus.RUNNING
            replica.started_at = at
        attempt.status = AttemptStatus.RUNNING
        attempt.started_at = at
        attempt.image, attempt.image_digest = image, details.id or None
        attempt.env_lock = details.labels.get(ENV_LOCK_LABEL) or None
        job.image = image
        if job.status in (JobStatus.SCHEDULED, JobStatus.STARTING):
            lifecycle.transition(session, job, JobStatus.RUNNING, "all replicas started", attempt=attempt.number, at=at)
        with lifecycle.fenced(f"attempt {attempt.number} of job {job.id}"):
            session.flush()
        to_follow = [(nodes[r.node_name], started[r.rank], r.rank) for r in attempt.replicas]
        job_id, number = job.id, attempt.number
    for node, container_id, rank in to_follow:
        backend: ComputeBackend = ctx.backend(node)
        work.followers.submit(follow_key(container_id), follow_logs, ctx.logs, backend, container_id,
                              ctx.logs.path(job_id, number, rank), lane="")
    ctx.wake_reconciler.set()
