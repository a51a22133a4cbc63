"""Users, projects, memberships and API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api import ProjectOut, UserOut
from deepdock.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    SpecError,
)
from deepdock.server.db.models import ApiToken, Membership, Project, User

TOKEN_BYTES = 32
DEFAULT_PROJECT = "default"
ADMIN_USER = "admin"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise SpecError(f"{kind} name {name!r} must be 1-63 chars of a-z, 0-9, '_', '.', '-'")


def create_token(session: Session, user: User, name: str = "") -> str:
    token = "dd_" + secrets.token_urlsafe(TOKEN_BYTES)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), name=name))
    session.flush()
    return token


def authenticate(session: Session, token: str) -> User:
    if not token:
        raise AuthenticationError("missing API token (Authorization: Bearer <token>)")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise AuthenticationError("invalid API token")
    return row.user


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        _check_name("project", name)
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def bootstrap_admin(session: Session) -> str | None:
    """On the first start: an admin user, the default project and a token. Returns the token, or None."""
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    admin = User(name=ADMIN_USER, is_admin=True)
    session.add(admin)
    session.flush()
    project = get_or_create_project(session, DEFAULT_PROJECT)
    session.add(Membership(user_id=admin.id, project_id=project.id, role="admin"))
    return create_token(session, admin, "bootstrap")


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise PermissionDeniedError("this needs an admin token")


def user_out(user: User, token: str | None = None) -> UserOut:
    return UserOut(name=user.name, is_admin=user.is_admin, token=token)


def project_out(p: Project) -> ProjectOut:
    return ProjectOut(name=p.name, quota_cpus=p.quota_cpus, quota_memory=p.quota_memory, quota_gpus=p.quota_gpus,
                      host_network=bool(p.host_network))


def create_user(session: Session, actor: User, name: str, *, is_admin: bool = False, projects: list[str]) -> UserOut:
    """A user and their first token (shown once, in the answer)."""
    require_admin(actor)
    _check_name("user", name)
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ConflictError(f"user {name!r} already exists")
    user = User(name=name, is_admin=is_admin)
    session.add(user)
    session.flush()
    for project_name in projects or [DEFAULT_PROJECT]:
        add_member(session, actor, project_name, name)
    return user_out(user, create_token(session, user, "initial"))


def add_member(session: Session, actor: User, project_name: str, user_name: str, role: str = "member") -> None:
    require_admin(actor)
    project = get_or_create_project(session, project_name)
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise NotFoundError(f"no user {user_name!r}")
    exists = session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.project_id == project.id)
    )
    if exists is None:
        session.add(Membership(user_id=user.id, project_id=project.id, role=role))
        session.flush()


def set_quota(
    session: Session, actor: User, project_name: str, *, cpus: float | None, memory: int | None, gpus: float | None
) -> ProjectOut:
    require_admin(actor)
    project = get_or_create_project(session, project_name)
    project.quota_cpus, project.quota_memory, project.quota_gpus = cpus, memory, gpus
    session.flush()
    return project_out(project)


def set_host_network(session: Session, actor: User, project_name: str, *, allowed: bool) -> ProjectOut:
    """An admin's grant: the project's gangs may use the nodes' own network, which spans nodes but also
    reaches the nodes' own services (docs/security.md). Running jobs keep the network they started with."""
    require_admin(actor)
    project = get_or_create_project(session, project_name)
    project.host_network = allowed
    session.flush()
    return project_out(project)


def visible_project_ids(session: Session, user: User) -> list[int] | None:
    """Projects whose jobs ``user`` may see; None means all (admins)."""
    if user.is_admin:
        return None
    return list(session.scalars(select(Membership.project_id).where(Membership.user_id == user.id)))


def project_for_submit(session: Session, user: User, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        if not user.is_admin:
            raise NotFoundError(f"no project {name!r}")
        return get_or_create_project(session, name)
    visible = visible_project_ids(session, user)
    if visible is not None and project.id not in visible:
        raise PermissionDeniedError(f"you are not a member of project {name!r}")
    return project


def list_projects(session: Session, user: User) -> list[ProjectOut]:
    visible = visible_project_ids(session, user)
    query = select(Project).order_by(Project.name)
    if visible is not None:
        query = query.where(Project.id.in_(visible))
    return [project_out(p) for p in session.scalars(query)]
