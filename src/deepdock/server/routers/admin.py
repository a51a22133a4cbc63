"""/api/v1/users, /projects, /tokens: tenancy. Pass-throughs to services/auth.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from deepdock.api import HostNetworkIn, MemberIn, ProjectOut, QuotaIn, TokenOut, UserIn, UserOut
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_session
from deepdock.server.services import auth

router = APIRouter(tags=["tenancy"])


@router.get("/me", response_model=UserOut)
def me(user: User = Depends(current_user)) -> UserOut:
    return auth.user_out(user)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, session: Session = Depends(get_session), user: User = Depends(current_user)) -> UserOut:
    return auth.create_user(session, user, body.name, is_admin=body.is_admin, projects=body.projects)


@router.post("/tokens", response_model=TokenOut, status_code=201)
def create_token(session: Session = Depends(get_session), user: User = Depends(current_user)) -> TokenOut:
    return TokenOut(token=auth.create_token(session, session.merge(user), "cli"))


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(session: Session = Depends(get_session), user: User = Depends(current_user)) -> list[ProjectOut]:
    return auth.list_projects(session, user)


@router.post("/projects/{name}/members", status_code=204)
def add_member(name: str, body: MemberIn, session: Session = Depends(get_session),
               user: User = Depends(current_user)) -> None:
    auth.add_member(session, user, name, body.user, body.role)


@router.put("/projects/{name}/host-network", response_model=ProjectOut)
def set_host_network(name: str, body: HostNetworkIn, session: Session = Depends(get_session),
                     user: User = Depends(current_user)) -> ProjectOut:
    return auth.set_host_network(session, user, name, allowed=body.allowed)


@router.put("/projects/{name}/quota", response_model=ProjectOut)
def set_quota(name: str, body: QuotaIn, session: Session = Depends(get_session),
              user: User = Depends(current_user)) -> ProjectOut:
    return auth.set_quota(session, user, name, cpus=body.cpus, memory=body.memory, gpus=body.gpus)
