"""/api/v1/jobs/{ref}/metrics, params, artifacts, checkpoints, rerun and /api/v1/compare: pass-throughs to
services/runs.py, services/artifacts.py and services/jobs.py."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from deepdock.api import ArtifactOut, CheckpointOut, JobOut, MetricsOut, ParamsOut, RunSummary, SeriesOut
from deepdock.server.context import WAKE_SCHEDULER, AppContext
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_ctx, get_session
from deepdock.server.services import artifacts, runs
from deepdock.server.services.jobs import rerun_job

router = APIRouter(tags=["tracking"])


@router.get("/jobs/{ref}/metrics", response_model=MetricsOut)
def metrics(ref: str, session: Session = Depends(get_session), user: User = Depends(current_user)) -> MetricsOut:
    return runs.job_metrics(session, user, ref)


@router.get("/jobs/{ref}/metrics/{name:path}", response_model=SeriesOut)
async def series(ref: str, name: str, ctx: AppContext = Depends(get_ctx), user: User = Depends(current_user),
                 max_points: int | None = None, attempt: int | None = None, rank: int | None = None,
                 after_step: int | None = None) -> Response:
    """Columns, not objects, encoded from the numpy arrays by orjson rather than through the response model:
    validating and encoding 100,000 points the stdlib way took ~90 ms alone; this takes a few."""
    def read() -> bytes:
        with ctx.db.session() as session:
            out = runs.read_series(session, user, ref, name, max_points=max_points, attempt=attempt, rank=rank,
                                   after_step=after_step)
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

    return Response(await run_in_threadpool(read), media_type="application/json")


@router.get("/jobs/{ref}/params", response_model=ParamsOut)
def params(ref: str, session: Session = Depends(get_session), user: User = Depends(current_user)) -> ParamsOut:
    return runs.job_params(session, user, ref)


@router.get("/compare", response_model=list[RunSummary])
def compare(job: Annotated[list[str], Query()], session: Session = Depends(get_session),
            user: User = Depends(current_user)) -> list[RunSummary]:
    return runs.compare_jobs(session, user, job)


@router.get("/jobs/{ref}/checkpoints", response_model=list[CheckpointOut])
def checkpoints(ref: str, session: Session = Depends(get_session), user: User = Depends(current_user)) -> list[CheckpointOut]:
    return runs.list_checkpoints(session, user, ref)


@router.get("/jobs/{ref}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(ref: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
                   user: User = Depends(current_user)) -> list[ArtifactOut]:
    return artifacts.list_artifacts(session, ctx.artifacts, user, ref)


@router.get("/jobs/{ref}/artifacts/{path:path}",
            responses={200: {"description": "the file", "content": {"application/octet-stream": {"schema": {
                "type": "string", "format": "binary"}}}}})
def get_artifact(ref: str, path: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
                 user: User = Depends(current_user)) -> StreamingResponse:
    key = artifacts.artifact_key(session, user, ref, path)
    session.close()
    return StreamingResponse(artifacts.read_artifact(ctx.artifacts, key), media_type="application/octet-stream")


@router.post("/jobs/{ref}/rerun", response_model=JobOut, status_code=201)
def rerun(ref: str, ctx: AppContext = Depends(get_ctx), session: Session = Depends(get_session),
          user: User = Depends(current_user)) -> JobOut:
    job = rerun_job(session, user, ref, server_home=ctx.settings.home)
    ctx.wake(WAKE_SCHEDULER)
    return job
