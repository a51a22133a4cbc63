"""STARTING: make sure the image is on the node, then create and start one container per replica."""

from __future__ import annotations

import docker
from sqlalchemy import select

from deepdock.compute.base import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_NODE,
    ContainerSpec,
    VolumeMount,
)
from deepdock.errors import ConflictError, DeepdockError, ImageMissingError
from deepdock.server.background.context import LoopContext, log
from deepdock.server.background.workspace import ARTIFACTS_SUBDIR, workspace_archive
from deepdock.server.db.models import Attempt, Job, Node, now_s
from deepdock.server.services import lifecycle
from deepdock.server.services.attempts import OUTCOME_FAILED, finish_attempt
from deepdock.server.services.code import read_code
from deepdock.server.services.engine_access import IMAGE_COPY_TIMEOUT_S, copy_image, docker_client_for, is_local_engine
from deepdock.specs.env import EnvSpec

LABEL_RANK = "deepdock.rank"
DEFAULT_MASTER_PORT = 29500


def _job_env(job: Job, attempt: Attempt, rank: int, workdir: str) -> dict[str, str]:
    spec = job.spec
    env = dict(spec.get("env") or {})
    env.update(
        {
            "DEEPDOCK_JOB_ID": job.id,
            "DEEPDOCK_JOB_NAME": job.name,
            "DEEPDOCK_ATTEMPT": str(attempt.number),
            "DEEPDOCK_ARTIFACTS_DIR": f"{workdir.rstrip('/')}/{ARTIFACTS_SUBDIR}",
            # torchrun's variables, so `torch.distributed.init_process_group("env://")` works as is.
            "RANK": str(rank),
            "WORLD_SIZE": str(job.replicas),
            "MASTER_ADDR": attempt.replicas[0].container_name,
            "MASTER_PORT": str(DEFAULT_MASTER_PORT),
        }
    )
    return env


def _ensure_image(ctx: LoopContext, job: Job, node: Node) -> str:
    """The job's image on ``node``: the spec's image, or its environment's content-addressed tag.

    Environments are built where the wheel server can reach the builder: on the node itself when its
    engine runs on this host, else on this host's engine and then copied to the node (save → load;
    there is no registry between nodes). Both are no-ops once the tag exists.
    """
    if job.image and not (job.spec.get("environment")):
        return job.image
    from deepdock.envs import build_env

    client = docker_client_for(node, ctx.pool.get(node))
    if client is None:
        raise ImageMissingError(f"node {node.name} is not a Docker engine and cannot build environments")
    spec = EnvSpec.model_validate(job.spec["environment"])
    try:
        if is_local_engine(node.engine_url):
            return build_env(spec, docker_client=client, offline=True).tag
        local = docker.DockerClient(base_url=ctx.settings.docker_host or None, timeout=IMAGE_COPY_TIMEOUT_S)
        try:
            tag = build_env(spec, docker_client=local, offline=True).tag
            copy_image(local, client, tag)
            return tag
        finally:
            local.close()
    finally:
        client.close()


def start_attempt(ctx: LoopContext, attempt_id: int) -> None:
    try:
        _start_attempt(ctx, attempt_id)
    except Exception:  # noqa: BLE001 - a bug here must not kill the worker thread; the reconciler retries
        log.exception("starting attempt %s failed", attempt_id)
    finally:
        with ctx.lock:
            ctx.starting.discard(attempt_id)
        ctx.wake_reconciler.set()


def _fail(ctx: LoopContext, attempt_id: int, code: str, message: str) -> None:
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, attempt.job_id) if attempt else None
        if attempt is None or job is None or job.status in lifecycle.TERMINAL or attempt.finished_at is not None:
            return
        finish_attempt(session, job, attempt, OUTCOME_FAILED, message, code=code)
    ctx.wake_scheduler.set()


def _start_attempt(ctx: LoopContext, attempt_id: int) -> None:
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None or attempt.finished_at is not None:
            return
        job = session.get(Job, attempt.job_id)
        assert job is not None
        if job.status == lifecycle.SCHEDULED:
            lifecycle.transition(session, job, lifecycle.STARTING, "preparing image and containers", attempt=attempt.number)
        nodes = {n.name: n for n in session.scalars(select(Node).where(Node.name.in_([r.node_name for r in attempt.replicas])))}
        session.expunge_all()
    try:
        image = _ensure_image(ctx, job, nodes[attempt.replicas[0].node_name])
        code = read_code(ctx.settings.home, job.code_sha256) if job.code_sha256 else None
    except ImageMissingError as exc:
        _fail(ctx, attempt_id, lifecycle.REASON_IMAGE_MISSING, exc.message)
        return
    except DeepdockError as exc:
        _fail(ctx, attempt_id, lifecycle.REASON_START_FAILED, exc.message)
        return
    archive = workspace_archive(code)
    spec = job.spec
    resources = spec["resources"]
    workdir = spec.get("workdir") or "/workspace"
    started: dict[int, str] = {}
    for replica in attempt.replicas:
        node = nodes[replica.node_name]
        backend = ctx.pool.get(node)
        container = ContainerSpec(
            name=replica.container_name,
            image=image,
            command=list(spec["command"]),
            env=_job_env(job, attempt, replica.rank, workdir),
            labels={
                **ctx.settings.container_labels,
                LABEL_MANAGED: "true",
                LABEL_JOB: job.id,
                LABEL_ATTEMPT: str(attempt.number),
                LABEL_NODE: node.name,
                LABEL_RANK: str(replica.rank),
            },
            cpus=job.cpus,
            memory=job.memory,
            pids_limit=int(resources.get("pids", 4096)),
            shm_size=int(resources.get("shm_size", 64 * 1024**2)),
            gpu_indices=list(replica.gpu_indices or []),
            gpu_share=replica.gpu_share,
            workdir=workdir,
            volumes=[VolumeMount(v["source"], v["target"], v.get("read_only", True)) for v in spec.get("volumes") or []],
            code_archive=archive,
            hostname=replica.container_name,
        )
        try:
            started[replica.rank] = backend.run(container)
        except ConflictError:
            # The name is taken: we started it before a restart. Adopt it, never start a second one.
            started[replica.rank] = backend.inspect(replica.container_name).id
        except ImageMissingError as exc:
            _fail(ctx, attempt_id, lifecycle.REASON_IMAGE_MISSING, exc.message)
            return
        except DeepdockError as exc:
            _fail(ctx, attempt_id, lifecycle.REASON_START_FAILED, f"node {node.name}: {exc.message}")
            return
    with ctx.db.session() as session:
        attempt = session.get(Attempt, attempt_id)
        job = session.get(Job, attempt.job_id) if attempt else None
        if attempt is None or job is None or attempt.finished_at is not None:
            return  # stopped or failed meanwhile: the reconciler removes what we started
        at = now_s()
        for replica in attempt.replicas:
            replica.container_id = started[replica.rank]
            replica.status = lifecycle.RUNNING
            replica.started_at = at
        attempt.status = lifecycle.RUNNING
        attempt.started_at = at
        job.image = image
        if job.status in (lifecycle.SCHEDULED, lifecycle.STARTING):
            lifecycle.transition(session, job, lifecycle.RUNNING, "all replicas started", attempt=attempt.number)
        to_follow = [(nodes[r.node_name], r.container_id, r.rank) for r in attempt.replicas]
        number = attempt.number
    for node, container_id, rank in to_follow:
        ctx.followers.follow(ctx.pool.get(node), container_id, ctx.logs.path(job.id, number, rank))
