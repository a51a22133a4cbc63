"""Which host paths a project's jobs may bind-mount: an admin's grant per project, never the engine.

A bind mount is the node's own file system, so it is refused unless its source lies under a prefix an
admin allowed for the job's project; it is read-only unless that grant is writable. Some paths can
never be mounted, whatever the grants: the engine's sockets (a container that reaches one controls
the engine, which is root on the host) and the server's home (its database, tokens and every
project's logs and artifacts). A path is refused if it lies below a protected one, and also if one
lies below it: mounting '/' or '/var' would carry the socket along. docs/security.md has the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api import HostPathOut
from deepdock.errors import NotFoundError, PermissionDeniedError, SpecError
from deepdock.server.db.models import HostPathGrant, Node, Project, User, now_s
from deepdock.server.services.auth import get_or_create_project, require_admin, visible_project_ids
from deepdock.specs.checks import check_host_path, is_under
from deepdock.specs.job import JobSpec

# Where Docker and containerd listen on a Debian host (/var/run is a link to /run; both are named
# because a bind source is not resolved here, it is resolved on the node).
ENGINE_SOCKET_PATHS = ("/run/docker.sock", "/var/run/docker.sock", "/run/docker", "/var/run/docker",
                       "/run/containerd", "/var/run/containerd", "/run/dockerd", "/var/lib/docker")


def protected_paths(home: Path, nodes: Iterable[Node]) -> list[str]:
    """The engine sockets (the default ones and each unix:// node's), and the server's home."""
    paths = list(ENGINE_SOCKET_PATHS)
    for node in nodes:
        url = urlparse(node.engine_url or "")
        if url.scheme in ("unix", "npipe") and url.path:
            paths.append(url.path)
    paths.append(str(home.resolve()))
    return paths


def _touches(path: str, protected: Iterable[str]) -> str | None:
    """The protected path that ``path`` is, lies below, or contains; None when it touches none."""
    for p in protected:
        if is_under(path, [p]) or is_under(p, [path]):
            return p
    return None


def grant_out(project: Project, grant: HostPathGrant) -> HostPathOut:
    return HostPathOut(project=project.name, prefix=grant.prefix, writable=grant.writable,
                       granted_by=grant.granted_by, created_at=grant.created_at)


def allow_host_path(session: Session, actor: User, project_name: str, prefix: str, *, writable: bool,
                    protected: list[str]) -> HostPathOut:
    require_admin(actor)
    try:
        prefix = check_host_path(prefix)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if not prefix.startswith("/"):
        raise SpecError(f"a host path prefix must be absolute, got {prefix!r}")
    hit = _touches(prefix, protected)
    if hit is not None:
        raise PermissionDeniedError(f"{prefix} cannot be granted: it is or contains {hit}, which gives "
                                    "control of the engine or of deepdock itself", details={"protected": hit})
    project = get_or_create_project(session, project_name)
    grant = session.scalar(select(HostPathGrant).where(HostPathGrant.project_id == project.id,
                                                       HostPathGrant.prefix == prefix))
    if grant is None:
        grant = HostPathGrant(project_id=project.id, prefix=prefix, created_at=now_s())
        session.add(grant)
    grant.writable, grant.granted_by = writable, actor.name
    session.flush()
    out = grant_out(project, grant)
    session.commit()
    return out


def revoke_host_path(session: Session, actor: User, project_name: str, prefix: str) -> None:
    require_admin(actor)
    project = _project(session, actor, project_name)
    grant = session.scalar(select(HostPathGrant).where(HostPathGrant.project_id == project.id,
                                                       HostPathGrant.prefix == prefix))
    if grant is None:
        raise NotFoundError(f"project {project_name!r} has no grant for {prefix}")
    session.delete(grant)
    session.commit()


def list_host_paths(session: Session, actor: User, project_name: str) -> list[HostPathOut]:
    """Members see their project's grants (they need to know what they may mount); admins see all."""
    project = _project(session, actor, project_name)
    grants = session.scalars(select(HostPathGrant).where(HostPathGrant.project_id == project.id)
                             .order_by(HostPathGrant.prefix))
    return [grant_out(project, g) for g in grants]


def _project(session: Session, actor: User, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    visible = visible_project_ids(session, actor)
    if project is None or (visible is not None and project.id not in visible):
        raise NotFoundError(f"no project {name!r}")
    return project


def check_mounts(session: Session, project: Project, spec: JobSpec, protected: list[str]) -> None:
    """Refuse, at submit, every bind mount the project's grants do not cover."""
    binds = [v for v in spec.volumes if v.is_bind]
    if not binds:
        return
    grants = list(session.scalars(select(HostPathGrant).where(HostPathGrant.project_id == project.id)))
    for volume in binds:
        hit = _touches(volume.source, protected)
        if hit is not None:
            raise PermissionDeniedError(
                f"volume {volume.source}: it is or contains {hit}, which is never mounted into a job",
                details={"source": volume.source, "protected": hit})
        covering = [g for g in grants if is_under(volume.source, [g.prefix])]
        if not covering:
            allowed = ", ".join(sorted(g.prefix for g in grants)) or "none"
            raise PermissionDeniedError(
                f"volume {volume.source}: project {project.name!r} may not mount this host path (allowed: "
                f"{allowed}); an admin grants one with `deepdock project allow-path {project.name} PREFIX`",
                details={"source": volume.source, "allowed": sorted(g.prefix for g in grants)})
        if not volume.read_only and not any(g.writable for g in covering):
            raise PermissionDeniedError(
                f"volume {volume.source}: project {project.name!r} may mount it read-only only; set "
                "read_only: true, or an admin grants it with --writable",
                details={"source": volume.source})
