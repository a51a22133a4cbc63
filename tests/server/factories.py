"""DB row factories (dstack's style): a test builds exactly the rows a state step reads, then calls the step.

Every factory takes the session to add to and flushes, so the rows have their ids; the caller's
``with db.session()`` commits. Defaults give a small runnable job (``busybox:latest``, 1 CPU, 1 GiB).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api.enums import AttemptStatus, JobStatus, NodeHealth, ReplicaStatus
from deepdock.server.background.schedule import container_name
from deepdock.server.db.models import Attempt, Job, JobEvent, Membership, Node, Project, Replica, User
from deepdock.server.services.jobs import _spec_columns, new_job_id
from deepdock.specs.job import JobSpec

GIB = 1024**3
DEFAULT_SPEC: dict[str, Any] = {
    "name": "train",
    "image": "busybox:latest",
    "command": ["sleep", "100"],
    "resources": {"cpus": 1, "memory": "1g"},
}
# Where the factories' default timestamps come from: the ``steps`` fixture points it at its FakeClock, so
# rows and the steps under test share one time.
clock: Callable[[], float] = time.time
# What each replica status means for the allocation index (models.Replica.active).
_HOLDS_RESOURCES = {ReplicaStatus.SCHEDULED, ReplicaStatus.RUNNING}


def make_user(session: Session, name: str = "admin", *, is_admin: bool = True) -> User:
    """The user of that name (created once)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=is_admin)
        session.add(user)
        session.flush()
    return user


def make_project(session: Session, name: str = "default", *, members: list[User] | None = None,
                 quota_cpus: float | None = None, quota_memory: int | None = None,
                 quota_gpus: float | None = None, host_network: bool = False) -> Project:
    """The project of that name (created once), with ``members`` added."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, quota_cpus=quota_cpus, quota_memory=quota_memory, quota_gpus=quota_gpus,
                          host_network=host_network)
        session.add(project)
        session.flush()
    for user in members or []:
        if session.scalar(select(Membership).where(Membership.user_id == user.id,
                                                   Membership.project_id == project.id)) is None:
            session.add(Membership(user_id=user.id, project_id=project.id))
    session.flush()
    return project


def gpu_rows(count: int, *, model: str = "A100", memory: int = 80 * GIB, node: str = "n") -> list[dict[str, Any]]:
    """``Node.gpus`` as the health step stores them (compute.base.GpuInfo as a dict)."""
    return [{"index": i, "uuid": f"GPU-{node}-{i}", "model": model, "memory": memory} for i in range(count)]


def make_node(
    session: Session,
    name: str,
    engine_url: str | None = None,
    *,
    cpus: float = 8,
    memory: int = 32 * GIB,
    gpus: int | list[dict[str, Any]] = 0,
    gpu_model: str = "A100",
    gpu_memory: int = 80 * GIB,
    status: NodeHealth = NodeHealth.READY,
    draining: bool = False,
    labels: dict[str, str] | None = None,
    last_seen_at: float | None = None,
    unreachable_since: float | None = None,
) -> Node:
    """A registered node; ``engine_url`` defaults to ``fake://NAME`` (the fake cluster's engine of that name)."""
    gpu_list = gpu_rows(gpus, model=gpu_model, memory=gpu_memory, node=name) if isinstance(gpus, int) else gpus
    node = Node(
        name=name, engine_url=f"fake://{name}" if engine_url is None else engine_url, cpus=cpus, memory=memory,
        gpus=gpu_list, labels=labels or {}, engine_version="fake", status=status, draining=draining,
        last_seen_at=clock() if last_seen_at is None else last_seen_at,
        unreachable_since=unreachable_since,
    )
    session.add(node)
    session.flush()
    return node


def job_spec_of(**overrides: Any) -> JobSpec:
    """The default spec with top-level fields replaced (``resources`` merged into the default's)."""
    raw = dict(DEFAULT_SPEC)
    resources = overrides.pop("resources", None)
    if resources is not None:
        raw["resources"] = {**DEFAULT_SPEC["resources"], **resources}
    if "environment" in overrides:
        raw.pop("image")
    raw.update(overrides)
    return JobSpec.model_validate(raw)


def make_job(
    session: Session,
    user: User | None = None,
    project: Project | None = None,
    *,
    status: JobStatus = JobStatus.QUEUED,
    stop_requested: str | None = None,
    status_reason: str = "",
    submitted_at: float | None = None,
    started_at: float | None = None,
    job_id: str | None = None,
    **spec: Any,
) -> Job:
    """A job as ``services.jobs.submit_job`` stores it: the JobSpec JSON and the columns copied from it.

    ``spec`` keywords are JobSpec fields (``resources`` is merged into the default's); ``project`` is the
    spec's project when not given. ``status`` is written as it is, after a submit event (and one event
    QUEUED → ``status``)."""
    parsed = job_spec_of(**spec)
    user = user if user is not None else make_user(session)
    project = project if project is not None else make_project(session, parsed.project, members=[user])
    at = clock() if submitted_at is None else submitted_at
    job_id = job_id or new_job_id()
    job = Job(
        id=job_id, project_id=project.id, user_id=user.id, spec=parsed.model_dump(mode="json"), status=status,
        status_reason=status_reason, stop_requested=stop_requested, cohort=job_id, submitted_at=at, created_at=at,
        updated_at=at, started_at=started_at, **_spec_columns(parsed),
    )
    session.add(job)
    session.add(JobEvent(job_id=job_id, from_status=None, to_status=JobStatus.QUEUED, reason="submitted", at=at))
    if status != JobStatus.QUEUED:
        # One event to where the test starts it, so the history stays a chain (each event from the last).
        session.add(JobEvent(job_id=job_id, from_status=JobStatus.QUEUED, to_status=status, reason="made by a test",
                             at=at))
    session.flush()
    return job


def make_attempt(
    session: Session,
    job: Job,
    nodes: list[str] | None = None,
    *,
    status: AttemptStatus = AttemptStatus.RUNNING,
    container_ids: list[str | None] | None = None,
    replica_status: ReplicaStatus | list[ReplicaStatus] | None = None,
    gpu_indices: list[list[int]] | None = None,
    gpu_share: float = 1.0,
    recorded_at: float | None = None,
    started_at: float | None = None,
    stop_sent_at: float | None = None,
    exit_codes: list[int | None] | None = None,
    network: str = "none",
    master_port: int | None = None,
) -> Attempt:
    """The job's next attempt with one replica per entry of ``nodes`` (a gang: ``["a", "b"]``).

    A replica with a container id is RUNNING unless ``replica_status`` says otherwise, one without is
    SCHEDULED; ``active`` follows its status. ``recorded_at`` and ``started_at`` default to now for
    replicas with a container."""
    nodes = nodes or ["a"]
    ids = container_ids if container_ids is not None else [None] * len(nodes)
    assert len(ids) == len(nodes), "one container id (or None) per replica"
    now = clock()
    number = job.attempt_count + 1
    job.attempt_count = number
    began = now if started_at is None else started_at
    attempt = Attempt(job_id=job.id, number=number, status=status, network=network, master_port=master_port,
                      started_at=began if status == AttemptStatus.RUNNING else started_at)
    for rank, node in enumerate(nodes):
        cid = ids[rank]
        if isinstance(replica_status, list):
            rstatus = replica_status[rank]
        elif replica_status is not None:
            rstatus = replica_status
        else:
            rstatus = ReplicaStatus.RUNNING if cid else ReplicaStatus.SCHEDULED
        attempt.replicas.append(Replica(
            job_id=job.id, rank=rank, node_name=node,
            gpu_indices=list(gpu_indices[rank]) if gpu_indices else [], gpu_share=gpu_share,
            active=rstatus in _HOLDS_RESOURCES, container_name=container_name(job.id, number, rank),
            container_id=cid, status=rstatus,
            exit_code=exit_codes[rank] if exit_codes else None,
            recorded_at=(recorded_at if recorded_at is not None else now) if cid else None,
            started_at=began if cid else None,
            stop_sent_at=stop_sent_at,
        ))
    session.add(attempt)
    session.flush()
    return attempt


SIGNATURE: dict[str, Any] = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
                             "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 4]}]}


def make_model_version(session: Session, store: Any, name: str = "digits-mlp", *, project: str = "default",
                       formats: tuple[str, ...] = ("onnx",), signature: dict[str, Any] | None = SIGNATURE,
                       content: bytes = b"model bytes", by: str = "admin", onnx: bytes | None = None) -> Any:
    """The next version of model ``name`` in ``project``, its files in ``store`` (an ArtifactStore): the
    model file and one exported file per format, as ``model export`` leaves them (``onnx``: the real ONNX
    file's bytes, for a version a real server can serve)."""
    import hashlib
    import uuid

    from sqlalchemy import func

    from deepdock.server.db.models import Model, ModelVersion

    owner = make_project(session, project)
    model = session.scalar(select(Model).where(Model.project_id == owner.id, Model.name == name))
    if model is None:
        model = Model(project_id=owner.id, name=name, created_by=by)
        session.add(model)
        session.flush()
    number = (session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)) or 0) + 1
    prefix = f"models/{uuid.uuid4().hex}"
    files = {"model.pt": content, **{f"model.{'onnx' if f == 'onnx' else 'ts.pt'}": content + f.encode()
                                     for f in formats}}
    if onnx is not None:
        files["model.onnx"] = onnx
    for path, data in files.items():
        store.put_bytes(f"{prefix}/{path}", data)
    version = ModelVersion(
        model_id=model.id, version=number, lineage={}, params={}, metrics={}, signature=signature,
        files=[{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files.items()],
        prefix=prefix, formats={f: {"file": f"model.{'onnx' if f == 'onnx' else 'ts.pt'}"} for f in formats},
        created_by=by)
    session.add(version)
    session.flush()
    return version
