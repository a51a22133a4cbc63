"""The model registry: models and immutable versions per project, with lineage, and aliases whose every
move is kept (append-only ``alias_events``), so ``rollback`` knows where an alias pointed before.

A version is made from files already in the artifact store: copied (outside any transaction) to a
prefix of their own, ``models/<uuid>/``, then recorded with what made them: the job and attempt, the
image tag and digest, the environment's lock hash, the code's sha256, the volumes it read, its params and
final metrics. A version an alias points to cannot be deleted. Users see their projects' models only.

Rollback replays the alias's events as a stack: ``set`` pushes, ``rollback`` pops, ``delete`` clears;
so two rollbacks after v1 → v2 → v3 land on v1, not back on v3.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from deepdock.api import AliasEventOut, FileOut, ModelDetail, ModelOut, ModelVersionOut
from deepdock.api.enums import AliasAction
from deepdock.api.models import ALIAS_PATTERN, MODEL_NAME_PATTERN
from deepdock.artifacts import ArtifactStore
from deepdock.errors import ConflictError, NotFoundError, SpecError
from deepdock.server.db.models import (
    AliasEvent,
    Attempt,
    DataRead,
    Job,
    JobParam,
    MetricLatest,
    Model,
    ModelAlias,
    ModelVersion,
    Project,
    User,
    now_s,
)
from deepdock.server.db.session import Database
from deepdock.server.services.artifacts import StoredFile
from deepdock.server.services.auth import project_for_submit, visible_project_ids
from deepdock.server.services.lifecycle import fenced

MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
ALIAS_RE = re.compile(ALIAS_PATTERN)
MODEL_FILE = "model.pt"
EXAMPLE_FILE = "example_input.npy"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return self.name + (f":{self.version}" if self.version else "") + (f"@{self.alias}" if self.alias else "")


def parse_ref(ref: str) -> ModelRef:
    """``name``, ``name:3`` or ``name@alias``."""
    name, alias = ref.split("@", 1) if "@" in ref else (ref, None)
    version = None
    if ":" in name:
        name, number = name.rsplit(":", 1)
        if not number.isdigit() or int(number) < 1:
            raise SpecError(f"{ref!r}: a version is a positive number (name:3)")
        version = int(number)
    check_model_name(name)
    if alias is not None:
        check_alias(alias)
        if version is not None:
            raise SpecError(f"{ref!r}: give a version or an alias, not both")
    return ModelRef(name, version, alias)


def check_model_name(name: str) -> str:
    if not MODEL_NAME_RE.match(name):
        raise SpecError(f"model name {name!r} is not valid: 1-128 letters, digits, '_', '-', '.', starting with a letter "
                        "or digit")
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias):
        raise SpecError(f"alias {alias!r} is not valid: lower-case letters, digits, '_' and '-', starting with a letter")
    return alias


# -- reading ------------------------------------------------------------------------------------------------
def get_model(session: Session, user: User, name: str, project: str | None = None) -> Model:
    query = select(Model).join(Project, Project.id == Model.project_id).where(Model.name == name)
    visible = visible_project_ids(session, user)
    if visible is not None:
        query = query.where(Model.project_id.in_(visible))
    if project is not None:
        query = query.where(Project.name == project)
    found = list(session.scalars(query))
    if not found:
        raise NotFoundError(f"no model {name!r}" + (f" in project {project!r}" if project else ""))
    if len(found) > 1:
        raise ConflictError(f"model {name!r} exists in several of your projects "
                            f"({', '.join(sorted(m.project.name for m in found))}): name the project")
    return found[0]


def _writable_model(session: Session, user: User, name: str, project: str | None) -> Model:
    model = get_model(session, user, name, project)
    project_for_submit(session, user, model.project.name)  # read access is not enough to change it
    return model


def get_version(session: Session, user: User, ref: str, project: str | None = None) -> tuple[Model, ModelVersion]:
    parsed = parse_ref(ref)
    model = get_model(session, user, parsed.name, project)
    number = parsed.version
    if parsed.alias is not None:
        alias = session.get(ModelAlias, (model.id, parsed.alias))
        if alias is None:
            raise NotFoundError(f"model {model.name} has no alias {parsed.alias!r}")
        number = alias.version
    query = select(ModelVersion).where(ModelVersion.model_id == model.id)
    query = query.where(ModelVersion.version == number) if number else query.order_by(ModelVersion.version.desc())
    version = session.scalars(query.limit(1)).first()
    if version is None:
        raise NotFoundError(f"model {model.name} has no version {number}" if number else f"model {model.name} has no versions")
    return model, version


def version_file_key(session: Session, user: User, ref: str, path: str, project: str | None = None) -> str:
    """The store key of one of a version's files (as ``files`` lists it); another name is "not found"."""
    model, version = get_version(session, user, ref, project)
    if path not in {f["path"] for f in version.files}:
        raise NotFoundError(f"version {version.version} of {model.name} has no file {path!r}; it has "
                            + ", ".join(sorted(f["path"] for f in version.files)))
    return f"{version.prefix}/{path}"


def _aliases(session: Session, model_id: int) -> dict[str, int]:
    return {a.alias: a.version for a in session.scalars(select(ModelAlias).where(ModelAlias.model_id == model_id))}


def version_out(model: Model, version: ModelVersion, aliases: dict[str, int]) -> ModelVersionOut:
    return ModelVersionOut(
        model=model.name, project=model.project.name, version=version.version, job=version.job_id,
        attempt=version.attempt, lineage=version.lineage, params=version.params, metrics=version.metrics,
        signature=version.signature, files=[FileOut(**f) for f in version.files], formats=version.formats,
        aliases=sorted(a for a, v in aliases.items() if v == version.version), created_by=version.created_by,
        created_at=version.created_at,
    )


def _model_out(session: Session, model: Model) -> ModelOut:
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    return ModelOut(name=model.name, project=model.project.name, description=model.description,
                    created_by=model.created_by, created_at=model.created_at, latest_version=latest,
                    aliases=_aliases(session, model.id))


def list_models(session: Session, user: User, project: str | None = None) -> list[ModelOut]:
    query = select(Model).join(Project, Project.id == Model.project_id).order_by(Project.name, Model.name)
    visible = visible_project_ids(session, user)
    if visible is not None:
        query = query.where(Model.project_id.in_(visible))
    if project is not None:
        query = query.where(Project.name == project)
    return [_model_out(session, m) for m in session.scalars(query)]


def show_model(session: Session, user: User, name: str, project: str | None = None) -> ModelDetail:
    model = get_model(session, user, name, project)
    aliases = _aliases(session, model.id)
    versions = session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version))
    return ModelDetail(**_model_out(session, model).model_dump(), versions=[version_out(model, v, aliases) for v in versions])


def show_version(session: Session, user: User, ref: str, project: str | None = None) -> ModelVersionOut:
    model, version = get_version(session, user, ref, project)
    return version_out(model, version, _aliases(session, model.id))


# -- making versions ----------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A version's files, already copied to their own prefix; recorded by ``register_prepared``."""

    name: str
    prefix: str
    files: list[dict[str, Any]]
    signature: dict[str, Any] | None
    attempt: int
    rank: int
    description: str = ""
    model_file: str = MODEL_FILE
    extra_lineage: dict[str, Any] = field(default_factory=dict)


def copy_files(store: ArtifactStore, files: dict[str, StoredFile]) -> tuple[str, list[dict[str, Any]]]:
    """Copy ``files`` (name in the version → where it is now) to a fresh prefix of their own."""
    prefix = f"models/{uuid.uuid4().hex}"
    out = []
    for name, stored in sorted(files.items()):
        store.copy(stored.key, f"{prefix}/{name}")
        out.append({"path": name, "size": stored.size, "sha256": stored.sha256})
    return prefix, out


def prepare_from_event(store: ArtifactStore, job_id: str, attempt: int, rank: int, event: dict[str, Any],
                       produced: dict[str, StoredFile]) -> Prepared | None:
    """A model the job registered with ``sdk.register_model``: its folder among the attempt's artifacts."""
    from deepdock.server.context import log

    name, folder = str(event.get("name", "")), str(event.get("dir", "")).strip("/")
    files = {path.removeprefix(folder + "/"): f for path, f in produced.items() if path.startswith(folder + "/")}
    if not MODEL_NAME_RE.match(name) or MODEL_FILE not in files:
        log.warning("job %s attempt %s: model %r was registered without its files; skipped", job_id, attempt, name)
        return None
    prefix, listed = copy_files(store, files)
    signature = event.get("signature") if isinstance(event.get("signature"), dict) else None
    return Prepared(name=name, prefix=prefix, files=listed, signature=signature, attempt=attempt, rank=rank)


def lineage(session: Session, job: Job, attempt_number: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(lineage, params, final metrics) of what a job's attempt ran."""
    from deepdock.server.services.jobs import job_spec

    attempt = session.scalar(select(Attempt).where(Attempt.job_id == job.id, Attempt.number == attempt_number))
    spec = job_spec(job)
    hashes = {d.target: d for d in session.scalars(select(DataRead).where(DataRead.job_id == job.id,
                                                                          DataRead.attempt == attempt_number))}
    data = []
    for v in spec.volumes:
        entry: dict[str, Any] = {"source": v.source, "target": v.target, "read_only": v.read_only,
                                 "kind": "bind" if v.is_bind else "volume"}
        read = hashes.get(v.target)
        if read is not None:
            entry.update({"sha256": read.sha256, "files": read.files, "bytes": read.bytes, "complete": read.complete})
        data.append(entry)
    info = {
        "job": job.id, "job_name": job.name, "attempt": attempt_number, "project": job.project.name,
        "image": (attempt.image if attempt else None) or job.image, "image_digest": attempt.image_digest if attempt else None,
        "env_lock": attempt.env_lock if attempt else None, "code_sha256": job.code_sha256, "command": list(spec.command),
        "data": data, "rerun_of": job.rerun_of,
    }
    params = {p.name: p.value for p in session.scalars(select(JobParam).where(JobParam.job_id == job.id))}
    metrics = {m.name: m.value for m in session.scalars(select(MetricLatest).where(MetricLatest.job_id == job.id))}
    return info, params, metrics


def register_prepared(session: Session, job: Job, attempt: Attempt, prepared: Prepared, *, user: User | None = None,
                      project: Project | None = None) -> ModelVersion:
    """Record a version of ``prepared.name`` in the job's project (or ``project``), by the job's user."""
    project = project or job.project
    by = (user or job.user).name
    model = session.scalar(select(Model).where(Model.project_id == project.id, Model.name == prepared.name))
    if model is None:
        model = Model(project_id=project.id, name=prepared.name, description=prepared.description, created_by=by)
        session.add(model)
        session.flush()
    number = (session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)) or 0) + 1
    info, params, metrics = lineage(session, job, attempt.number)
    info.update({"rank": prepared.rank, **prepared.extra_lineage})
    version = ModelVersion(model_id=model.id, version=number, job_id=job.id, attempt=attempt.number, lineage=info,
                           params=params, metrics=metrics, signature=prepared.signature, files=prepared.files,
                           prefix=prepared.prefix, model_file=prepared.model_file, formats={}, created_by=by)
    session.add(version)
    # Two registrations racing for the same number: the unique (model, version) key refuses the second.
    session.flush()
    return version


# -- aliases ------------------------------------------------------------------------------------------------
def set_alias(session: Session, user: User, name: str, alias: str, number: int, project: str | None = None,
              *, action: AliasAction = AliasAction.SET) -> AliasEventOut:
    check_alias(alias)
    model = _writable_model(session, user, name, project)
    if session.scalar(select(ModelVersion.id).where(ModelVersion.model_id == model.id, ModelVersion.version == number)) is None:
        raise NotFoundError(f"model {model.name} has no version {number}")
    current = session.get(ModelAlias, (model.id, alias))
    previous = current.version if current else None
    at = now_s()
    if current is None:
        session.add(ModelAlias(model_id=model.id, alias=alias, version=number, updated_by=user.name, updated_at=at))
    else:
        current.version, current.updated_by, current.updated_at = number, user.name, at
    event = AliasEvent(model_id=model.id, alias=alias, from_version=previous, to_version=number, action=action,
                       by=user.name, at=at)
    session.add(event)
    with fenced(f"alias {alias} of model {model.name}"):
        session.flush()
    return _event_out(event)


def delete_alias(session: Session, user: User, name: str, alias: str, project: str | None = None) -> AliasEventOut:
    model = _writable_model(session, user, name, project)
    current = session.get(ModelAlias, (model.id, check_alias(alias)))
    if current is None:
        raise NotFoundError(f"model {model.name} has no alias {alias!r}")
    event = AliasEvent(model_id=model.id, alias=alias, from_version=current.version, to_version=None,
                       action=AliasAction.DELETE, by=user.name, at=now_s())
    session.delete(current)
    session.add(event)
    session.flush()
    return _event_out(event)


def alias_history(session: Session, user: User, name: str, alias: str, project: str | None = None) -> list[AliasEventOut]:
    model = get_model(session, user, name, project)
    return [_event_out(e) for e in _events(session, model.id, check_alias(alias))]


def rollback_alias(session: Session, user: User, name: str, alias: str, project: str | None = None) -> AliasEventOut:
    model = _writable_model(session, user, name, project)
    stack: list[int] = []
    for event in _events(session, model.id, check_alias(alias)):
        if event.action == AliasAction.SET and event.to_version is not None:
            stack.append(event.to_version)
        elif event.action == AliasAction.ROLLBACK and stack:
            stack.pop()
        elif event.action == AliasAction.DELETE:
            stack.clear()
    if not stack:
        raise NotFoundError(f"model {model.name} has no alias {alias!r}")
    if len(stack) < 2:
        raise ConflictError(f"alias {alias!r} of model {model.name} has no earlier version to roll back to "
                            f"(it has pointed only at version {stack[0]})")
    return set_alias(session, user, name, alias, stack[-2], model.project.name, action=AliasAction.ROLLBACK)


def _events(session: Session, model_id: int, alias: str) -> list[AliasEvent]:
    return list(session.scalars(select(AliasEvent).where(AliasEvent.model_id == model_id, AliasEvent.alias == alias)
                                .order_by(AliasEvent.id)))


def _event_out(event: AliasEvent) -> AliasEventOut:
    return AliasEventOut(alias=event.alias, action=event.action, from_version=event.from_version,
                         to_version=event.to_version, by=event.by, at=event.at)


# -- deleting -----------------------------------------------------------------------------------------------
def delete_version(session: Session, user: User, ref: str, project: str | None = None) -> str:
    """Delete one version; returns its files' prefix for the caller to remove after the commit."""
    model, version = get_version(session, user, ref, project)
    if parse_ref(ref).version is None:
        raise SpecError(f"{ref!r}: name the version to delete (name:3)")
    project_for_submit(session, user, model.project.name)
    pointing = sorted(a for a, v in _aliases(session, model.id).items() if v == version.version)
    if pointing:
        raise ConflictError(f"version {version.version} of {model.name} is what alias {', '.join(pointing)} points to; "
                            "move the alias first", details={"aliases": pointing})
    from deepdock.server.services.inference import version_in_service

    serving = version_in_service(session, version.id)
    if serving:
        raise ConflictError(f"version {version.version} of {model.name} is served by service {', '.join(serving)}; "
                            "roll the service to another version first", details={"services": serving})
    prefix = version.prefix
    session.delete(version)
    session.flush()
    return prefix


def register_from_artifact(db: Database, store: ArtifactStore, user: User, name: str, job_ref: str, path: str,
                           example_input: str | None = None, project: str | None = None,
                           description: str = "") -> ModelVersionOut:
    """``model register NAME --job JOB --path model.pt [--example-input x.npy]``: a version from a file the
    job left among its artifacts."""
    import hashlib

    from deepdock.sdk.signature import npy_signature
    from deepdock.server.services.artifacts import ATTEMPT_DIR_RE, artifact_key
    from deepdock.server.services.jobs import get_job

    check_model_name(name)
    with db.session() as session:
        job = get_job(session, user, job_ref)
        target_id = project_for_submit(session, user, project or job.project.name).id
        keys = {"model": artifact_key(session, user, job.id, path)}
        if example_input:
            keys["example"] = artifact_key(session, user, job.id, example_input)
        job_id = job.id
    relative = keys["model"].removeprefix(job_id + "/")
    match = ATTEMPT_DIR_RE.match(relative)
    if match is None:
        raise SpecError(f"{path!r} is not a file a job attempt produced (attempt-N/rank-R/...)")
    attempt_number, rank = (int(part.split("-")[1]) for part in match.group(0).strip("/").split("/"))
    files: dict[str, StoredFile] = {}
    signature = None
    for role, key in keys.items():
        try:
            data = store.get_bytes(key)
        except NotFoundError:
            raise NotFoundError(f"job {job_id} has no artifact {key.removeprefix(job_id + '/')!r}") from None
        stored_name = EXAMPLE_FILE if role == "example" else key.rsplit("/", 1)[-1]
        files[stored_name] = StoredFile(key, len(data), hashlib.sha256(data).hexdigest())
        if role == "example":
            try:
                signature = npy_signature(data)
            except ValueError as exc:
                raise SpecError(f"example input {example_input!r} is not a .npy array: {exc}") from None
    prefix, listed = copy_files(store, files)
    with db.session() as session:
        source = session.get(Job, job_id)
        attempt = session.scalar(select(Attempt).where(Attempt.job_id == job_id, Attempt.number == attempt_number))
        target = session.get(Project, target_id)
        if source is None or attempt is None or target is None:
            raise NotFoundError(f"job {job_id} has no attempt {attempt_number}")
        prepared = Prepared(name=name, prefix=prefix, files=listed, signature=signature, attempt=attempt_number, rank=rank,
                            description=description, model_file=keys["model"].rsplit("/", 1)[-1])
        version = register_prepared(session, source, attempt, prepared, user=user, project=target)
        model = session.get(Model, version.model_id)
        assert model is not None
        return version_out(model, version, _aliases(session, model.id))
