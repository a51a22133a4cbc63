"""/api/v1/volumes and /api/v1/projects/{name}/host-paths: what a project's jobs may mount.
Pass-throughs to services/volumes.py and services/host_access.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepdock.api import HostPathIn, HostPathOut, VolumesOut
from deepdock.server.context import AppContext
from deepdock.server.db.models import Node, User
from deepdock.server.deps import current_user, get_ctx, get_session
from deepdock.server.services import host_access
from deepdock.server.services import volumes as volume_service

router = APIRouter(tags=["volumes"])


@router.get("/volumes", response_model=VolumesOut)
def list_volumes(project: str | None = None, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
                 user: User = Depends(current_user)) -> VolumesOut:
    return volume_service.list_volumes(session, user, ctx.backend, project)


@router.delete("/volumes/{project}/{name}", status_code=204)
def remove_volume(project: str, name: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
                  user: User = Depends(current_user)) -> None:
    volume_service.remove_volume(session, user, ctx.backend, project, name)


@router.get("/projects/{name}/host-paths", response_model=list[HostPathOut])
def list_host_paths(name: str, session: Session = Depends(get_session),
                    user: User = Depends(current_user)) -> list[HostPathOut]:
    return host_access.list_host_paths(session, user, name)


@router.post("/projects/{name}/host-paths", response_model=HostPathOut, status_code=201)
def allow_host_path(name: str, body: HostPathIn, ctx: AppContext = Depends(get_ctx),
                    session: Session = Depends(get_session), user: User = Depends(current_user)) -> HostPathOut:
    protected = host_access.protected_paths(ctx.settings.home, session.scalars(select(Node)))
    return host_access.allow_host_path(session, user, name, body.prefix, writable=body.writable, protected=protected)


@router.delete("/projects/{name}/host-paths", status_code=204)
def revoke_host_path(name: str, prefix: str, session: Session = Depends(get_session),
                     user: User = Depends(current_user)) -> None:
    host_access.revoke_host_path(session, user, name, prefix)
