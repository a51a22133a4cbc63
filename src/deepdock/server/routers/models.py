"""/api/v1/models: pass-throughs to services/registry.py and services/exports.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from deepdock.api import AliasEventOut, AliasIn, ExportIn, ExportOut, ModelDetail, ModelOut, ModelVersionOut, RegisterModelIn
from deepdock.server.context import WAKE_SCHEDULER, AppContext
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_ctx, get_session
from deepdock.server.services import registry
from deepdock.server.services.artifacts import read_artifact
from deepdock.server.services.exports import start_export

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelOut])
def list_models(project: str | None = None, session: Session = Depends(get_session),
                user: User = Depends(current_user)) -> list[ModelOut]:
    return registry.list_models(session, user, project)


@router.post("/models/{name}/versions", response_model=ModelVersionOut, status_code=201)
async def register(name: str, body: RegisterModelIn, ctx: AppContext = Depends(get_ctx),
                   user: User = Depends(current_user)) -> ModelVersionOut:
    return await run_in_threadpool(registry.register_from_artifact, ctx.db, ctx.artifacts, user, name, body.job, body.path,
                                   body.example_input, body.project, body.description)


@router.get("/models/{name}", response_model=ModelDetail)
def show(name: str, project: str | None = None, session: Session = Depends(get_session),
         user: User = Depends(current_user)) -> ModelDetail:
    return registry.show_model(session, user, name, project)


@router.get("/models/{name}/versions/{ref}", response_model=ModelVersionOut)
def show_version(name: str, ref: str, project: str | None = None, session: Session = Depends(get_session),
                 user: User = Depends(current_user)) -> ModelVersionOut:
    """``ref``: a version number or ``@alias``."""
    return registry.show_version(session, user, _full_ref(name, ref), project)


@router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_version(name: str, version: int, project: str | None = None, ctx: AppContext = Depends(get_ctx),
                   session: Session = Depends(get_session), user: User = Depends(current_user)) -> None:
    prefix = registry.delete_version(session, user, f"{name}:{version}", project)
    session.commit()
    ctx.artifacts.delete_prefix(prefix)


@router.put("/models/{name}/aliases/{alias}", response_model=AliasEventOut)
def set_alias(name: str, alias: str, body: AliasIn, project: str | None = None, session: Session = Depends(get_session),
              user: User = Depends(current_user)) -> AliasEventOut:
    return registry.set_alias(session, user, name, alias, body.version, project)


@router.delete("/models/{name}/aliases/{alias}", response_model=AliasEventOut)
def delete_alias(name: str, alias: str, project: str | None = None, session: Session = Depends(get_session),
                 user: User = Depends(current_user)) -> AliasEventOut:
    return registry.delete_alias(session, user, name, alias, project)


@router.get("/models/{name}/aliases/{alias}/history", response_model=list[AliasEventOut])
def alias_history(name: str, alias: str, project: str | None = None, session: Session = Depends(get_session),
                  user: User = Depends(current_user)) -> list[AliasEventOut]:
    return registry.alias_history(session, user, name, alias, project)


@router.post("/models/{name}/aliases/{alias}/rollback", response_model=AliasEventOut)
def rollback(name: str, alias: str, project: str | None = None, session: Session = Depends(get_session),
             user: User = Depends(current_user)) -> AliasEventOut:
    return registry.rollback_alias(session, user, name, alias, project)


@router.post("/models/{name}/versions/{ref}/export", response_model=ExportOut, status_code=201)
async def export(name: str, ref: str, body: ExportIn, project: str | None = None, ctx: AppContext = Depends(get_ctx),
                 user: User = Depends(current_user)) -> ExportOut:
    settings = ctx.settings
    out = await run_in_threadpool(start_export, ctx.db, ctx.artifacts, settings.home, settings.max_code_bytes, user,
                                  _full_ref(name, ref), body.format, body.generated, project)
    ctx.wake(WAKE_SCHEDULER)
    return out


@router.get("/models/{name}/versions/{ref}/files/{path:path}",
            responses={200: {"description": "the file", "content": {"application/octet-stream": {"schema": {
                "type": "string", "format": "binary"}}}}})
def get_version_file(name: str, ref: str, path: str, project: str | None = None, ctx: AppContext = Depends(get_ctx),
                     session: Session = Depends(get_session), user: User = Depends(current_user)) -> StreamingResponse:
    """One of the version's files (``files`` lists them: the model, its exports, the example input)."""
    key = registry.version_file_key(session, user, _full_ref(name, ref), path, project)
    session.close()
    return StreamingResponse(read_artifact(ctx.artifacts, key), media_type="application/octet-stream")


def _full_ref(name: str, ref: str) -> str:
    return f"{name}{ref}" if ref.startswith("@") else f"{name}:{ref}"
