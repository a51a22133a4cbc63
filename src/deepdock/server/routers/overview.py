"""/api/v1/overview: what the dashboard's first page shows (services/overview.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from deepdock.api import OverviewOut
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_session
from deepdock.server.services.overview import cluster_overview

router = APIRouter(tags=["overview"])


@router.get("/overview", response_model=OverviewOut)
def overview(session: Session = Depends(get_session), user: User = Depends(current_user)) -> OverviewOut:
    return cluster_overview(session, user)
