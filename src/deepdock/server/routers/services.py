"""/api/v1/services: pass-throughs to services/inference.py (a model version served by replicas)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from deepdock.api import ApplyServiceIn, ScaleServiceIn, ServiceDetail, ServiceOut, ServiceSampleOut, UpdateServiceIn
from deepdock.server.context import WAKE_RECONCILER, WAKE_ROLLOUT, AppContext
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_ctx, get_session
from deepdock.server.services import inference

router = APIRouter(tags=["services"])


def _detail(ctx: AppContext, session: Session, user: User, name: str) -> ServiceDetail:
    ctx.wake(WAKE_RECONCILER)
    ctx.wake(WAKE_ROLLOUT)
    return inference.describe_service(session, user, name, ctx.settings.endpoint_url)


@router.get("/services", response_model=list[ServiceOut])
def list_services(ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
                  user: User = Depends(current_user)) -> list[ServiceOut]:
    return inference.list_services(session, user, ctx.settings.endpoint_url)


@router.put("/services", response_model=ServiceDetail)
def apply(body: ApplyServiceIn, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
          user: User = Depends(current_user)) -> ServiceDetail:
    name, _revision = inference.apply_service(session, user, body.spec)
    return _detail(ctx, session, user, name)


@router.get("/services/{name}", response_model=ServiceDetail)
def describe(name: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
             user: User = Depends(current_user)) -> ServiceDetail:
    return inference.describe_service(session, user, name, ctx.settings.endpoint_url)


@router.get("/services/{name}/samples", response_model=list[ServiceSampleOut])
def samples(name: str, since: float | None = None, session: Session = Depends(get_session),
            user: User = Depends(current_user)) -> list[ServiceSampleOut]:
    """The traffic the gateway measured, every few seconds, for the service and each revision."""
    return inference.service_samples(session, user, name, since)


@router.patch("/services/{name}", response_model=ServiceDetail)
def update(name: str, body: UpdateServiceIn, ctx: AppContext = Depends(get_ctx),
           session: Session = Depends(get_session), user: User = Depends(current_user)) -> ServiceDetail:
    inference.update_service(session, user, name, **body.model_dump())
    return _detail(ctx, session, user, name)


@router.post("/services/{name}/scale", response_model=ServiceDetail)
def scale(name: str, body: ScaleServiceIn, ctx: AppContext = Depends(get_ctx),
          session: Session = Depends(get_session), user: User = Depends(current_user)) -> ServiceDetail:
    inference.scale_service(session, user, name, **body.model_dump())
    return _detail(ctx, session, user, name)


@router.post("/services/{name}/rollback", response_model=ServiceDetail)
def rollback(name: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
             user: User = Depends(current_user)) -> ServiceDetail:
    inference.rollback_service(session, user, name)
    return _detail(ctx, session, user, name)


@router.delete("/services/{name}", status_code=204)
def delete(name: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
           user: User = Depends(current_user)) -> None:
    if inference.delete_service(session, user, name):
        ctx.wake(WAKE_RECONCILER)
        ctx.wake(WAKE_ROLLOUT)
