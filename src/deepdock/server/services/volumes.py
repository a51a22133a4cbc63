"""Named volumes: each belongs to one project. A spec's ``source: cache`` is the project's volume
``cache``, which the engine knows as ``dd-p<project id>-cache``: one project can never name, and so
never mount, another's. The start step creates it labelled on each node of the job before the
containers mount it; ``deepdock volume ls|rm`` find and remove a project's volumes by those labels.

Volumes live on engines, not in the database: a listing asks every reachable node (with the control
timeout, one node after another) and names the nodes that did not answer.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api import VolumeOut, VolumesOut
from deepdock.api.enums import NodeHealth
from deepdock.compute.abilities import VolumeStore, ability
from deepdock.compute.base import LABEL_MANAGED, ComputeBackend
from deepdock.errors import DeepdockError, NotFoundError, UnsupportedError
from deepdock.server.db.models import Node, Project, User
from deepdock.server.services.auth import visible_project_ids

LABEL_PROJECT = "deepdock.project"
LABEL_PROJECT_ID = "deepdock.project_id"
LABEL_VOLUME = "deepdock.volume"


def engine_volume_name(project_id: int, name: str) -> str:
    return f"dd-p{project_id}-{name}"


def volume_labels(project: Project, name: str, extra: dict[str, str]) -> dict[str, str]:
    return {**extra, LABEL_MANAGED: "true", LABEL_PROJECT: project.name, LABEL_PROJECT_ID: str(project.id),
            LABEL_VOLUME: name}


def ensure_project_volumes(backend: ComputeBackend, node: str, project: Project, names: list[str],
                           extra_labels: dict[str, str]) -> None:
    """Create the project's volumes ``names`` on one node (labelled), before a container mounts them."""
    if not names:
        return
    store = ability(backend, VolumeStore, node)
    for name in names:
        store.ensure_volume(engine_volume_name(project.id, name), volume_labels(project, name, extra_labels))


BackendOf = Callable[[Node], ComputeBackend]


def _projects(session: Session, user: User, project: str | None) -> list[Project]:
    visible = visible_project_ids(session, user)
    query = select(Project).order_by(Project.name)
    if project is not None:
        query = query.where(Project.name == project)
    found = [p for p in session.scalars(query) if visible is None or p.id in visible]
    if project is not None and not found:
        raise NotFoundError(f"no project {project!r}")
    return found


def list_volumes(session: Session, user: User, backend_of: BackendOf, project: str | None = None) -> VolumesOut:
    projects = {str(p.id): p for p in _projects(session, user, project)}
    nodes = list(session.scalars(select(Node).order_by(Node.name)))
    session.expunge_all()
    volumes: list[VolumeOut] = []
    unreachable: list[str] = []
    for node in nodes:
        if node.status == NodeHealth.UNREACHABLE:
            unreachable.append(node.name)
            continue
        try:
            found = ability(backend_of(node), VolumeStore, node.name).list_volumes({LABEL_MANAGED: "true"})
        except UnsupportedError:
            continue
        except DeepdockError:
            unreachable.append(node.name)
            continue
        for info in found:
            owner = projects.get(info.labels.get(LABEL_PROJECT_ID, ""))
            if owner is None or LABEL_VOLUME not in info.labels:
                continue
            volumes.append(VolumeOut(name=info.labels[LABEL_VOLUME], project=owner.name, node=node.name,
                                     engine_name=info.name, created_at=info.created_at))
    return VolumesOut(volumes=volumes, unreachable_nodes=unreachable)


def remove_volume(session: Session, user: User, backend_of: BackendOf, project: str, name: str) -> list[str]:
    """Remove the project's volume from every node that holds it; returns those nodes. A node that does
    not answer is an error (the volume would survive there); one in use is a ConflictError."""
    owner = _projects(session, user, project)[0]
    nodes = list(session.scalars(select(Node).order_by(Node.name)))
    session.expunge_all()
    engine_name = engine_volume_name(owner.id, name)
    removed = []
    for node in nodes:
        try:
            store = ability(backend_of(node), VolumeStore, node.name)
        except UnsupportedError:
            continue
        held = [v for v in store.list_volumes({LABEL_PROJECT_ID: str(owner.id), LABEL_VOLUME: name})
                if v.name == engine_name]
        if held:
            store.remove_volume(engine_name)
            removed.append(node.name)
    if not removed:
        raise NotFoundError(f"project {project!r} has no volume {name!r} on any node")
    return removed


__all__ = ["engine_volume_name", "ensure_project_volumes", "list_volumes", "remove_volume"]
