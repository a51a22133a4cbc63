"""/api/v1/nodes: register Docker engines, list their capacity and allocations, drain or remove them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from deepdock.server.background.context import LoopContext
from deepdock.server.db.models import Node, User
from deepdock.server.deps import current_user, get_ctx, get_session
from deepdock.server.schemas import NodeIn, NodeOut, NodeStatusIn
from deepdock.server.services import nodes as node_service

router = APIRouter(tags=["nodes"])


def node_out(node: Node, used: dict[str, dict[str, object]]) -> NodeOut:
    u = used.get(node.name, {})
    gpu_used: dict[int, float] = u.get("gpu_used", {})  # type: ignore[assignment]
    return NodeOut(
        name=node.name, engine_url=node.engine_url, status=node.status, cpus=node.cpus, memory=node.memory,
        gpus=list(node.gpus or []), labels=dict(node.labels or {}), engine_version=node.engine_version,
        allocated_cpus=float(u.get("cpus", 0.0)), allocated_memory=int(u.get("memory", 0)),  # type: ignore[arg-type,call-overload]
        allocated_gpus=sum(gpu_used.values()), last_seen_at=node.last_seen_at, last_error=node.last_error,
    )


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(session: Session = Depends(get_session), user: User = Depends(current_user)) -> list[NodeOut]:
    used = node_service.allocations(session)
    return [node_out(n, used) for n in node_service.list_nodes(session)]


@router.post("/nodes", response_model=NodeOut, status_code=201)
def add_node(body: NodeIn, ctx: LoopContext = Depends(get_ctx), user: User = Depends(current_user)) -> NodeOut:
    node = node_service.add_node(
        ctx.db.session, ctx.pool, user, body.name, body.engine_url,
        tls_ca=body.tls_ca, tls_cert=body.tls_cert, tls_key=body.tls_key, labels=body.labels,
    )
    ctx.wake("scheduler")
    return node_out(node, {})


@router.patch("/nodes/{name}", response_model=NodeOut)
def set_status(name: str, body: NodeStatusIn, ctx: LoopContext = Depends(get_ctx),
               session: Session = Depends(get_session), user: User = Depends(current_user)) -> NodeOut:
    node = node_service.set_node_status(session, user, name, body.status)
    ctx.wake("scheduler")
    return node_out(node, node_service.allocations(session))


@router.delete("/nodes/{name}", status_code=204)
def remove_node(name: str, force: bool = False, ctx: LoopContext = Depends(get_ctx),
                session: Session = Depends(get_session), user: User = Depends(current_user)) -> None:
    node_service.remove_node(session, user, name, force=force)
    ctx.pool.forget(name)
