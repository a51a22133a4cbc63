"""/api/v1/nodes: register Docker engines, list their capacity and allocations, drain or remove them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from deepdock.api import GpuSeriesOut, NodeIn, NodeOut, NodeStatusIn, NodeUsageSampleOut
from deepdock.server.context import WAKE_SCHEDULER, AppContext
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_ctx, get_session
from deepdock.server.services import gpus as gpu_service
from deepdock.server.services import nodes as node_service

router = APIRouter(tags=["nodes"])


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(session: Session = Depends(get_session), user: User = Depends(current_user)) -> list[NodeOut]:
    return node_service.list_nodes(session, user)


@router.get("/nodes/usage", response_model=list[NodeUsageSampleOut])
def node_usage(since: float | None = None, session: Session = Depends(get_session),
               user: User = Depends(current_user)) -> list[NodeUsageSampleOut]:
    """Each node's job containers summed per usage round (the dashboard's node charts)."""
    return node_service.node_usage(session, since)


@router.get("/nodes/gpus/usage", response_model=list[GpuSeriesOut])
def gpu_usage(since: float | None = None, node: str | None = None, max_points: int | None = None,
              session: Session = Depends(get_session), user: User = Depends(current_user)) -> list[GpuSeriesOut]:
    """Each GPU's utilization and memory per usage round, from the nodes' NVIDIA tools: one series per
    device (the last hour by default; one node with ``node``; at most ``max_points`` a series)."""
    return gpu_service.gpu_usage(session, since, node, max_points)


@router.post("/nodes", response_model=NodeOut, status_code=201)
def add_node(body: NodeIn, ctx: AppContext = Depends(get_ctx), user: User = Depends(current_user)) -> NodeOut:
    node = node_service.add_node(ctx.db.session, ctx.pool, user, body.name, body.engine_url, tls_ca=body.tls_ca,
                                 tls_cert=body.tls_cert, tls_key=body.tls_key, labels=body.labels,
                                 address=body.address)
    ctx.wake(WAKE_SCHEDULER)
    return node


@router.patch("/nodes/{name}", response_model=NodeOut)
def set_status(name: str, body: NodeStatusIn, ctx: AppContext = Depends(get_ctx),
               session: Session = Depends(get_session), user: User = Depends(current_user)) -> NodeOut:
    node = node_service.set_node_status(session, user, name, body.status)
    ctx.wake(WAKE_SCHEDULER)
    return node


@router.delete("/nodes/{name}", status_code=204)
def remove_node(name: str, force: bool = False, ctx: AppContext = Depends(get_ctx),
                session: Session = Depends(get_session), user: User = Depends(current_user)) -> None:
    node_service.remove_node(session, ctx.pool, user, name, force=force)
