"""/api/v1/jobs/{ref}/live: a job's status and metrics as server-sent events, for the dashboard.

One stream per open job page: ``status`` when the status, its reason or the pending reason changes;
``metrics`` with each series' points (the first message of a series carries it downsampled to
``max_points``, the later ones only the points logged since); ``end`` once the job has ended and its last
points are sent. The server reads the database every ``LIVE_POLL_S`` (level-triggered, like the loops:
nothing to wire into the ingestion path), so a point is on the page within about that long plus the
SDK's flush. A comment line every ``HEARTBEAT_S`` keeps idle proxies from closing the stream.

EventSource cannot send an Authorization header, so the dashboard reads the stream with ``fetch`` (the
same token as every API call); any client that can send the header can use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from deepdock.api.enums import TERMINAL_JOB_STATUSES
from deepdock.errors import SpecError
from deepdock.server.context import AppContext
from deepdock.server.db.models import User
from deepdock.server.deps import current_user, get_ctx
from deepdock.server.services import runs
from deepdock.server.services.jobs import read_status
from deepdock.server.services.runs import MAX_POINTS_CAP

router = APIRouter(tags=["live"])

LIVE_POLL_S = 0.5
HEARTBEAT_S = 15.0
DEFAULT_MAX_POINTS = 2000


def _event(kind: str, data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n\n"


# One server-sent event as a client parses it: its kind and its JSON payload.
EVENT_SCHEMA = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["status", "metrics", "end"]}, "data": {"type": "string"}}}


@router.get("/jobs/{ref}/live", responses={200: {"description": "server-sent events: status, metrics, end",
                                                 "content": {"text/event-stream": {"schema": EVENT_SCHEMA}}}})
async def live(ref: str, max_points: int = DEFAULT_MAX_POINTS, ctx: AppContext = Depends(get_ctx),
               user: User = Depends(current_user)) -> StreamingResponse:
    if not 2 <= max_points <= MAX_POINTS_CAP:
        raise SpecError(f"max_points must be between 2 and {MAX_POINTS_CAP}")
    first = await run_in_threadpool(read_status, ctx.db, user, ref)  # a 404 or 403 before the stream opens
    return StreamingResponse(_stream(ctx, user, str(first["id"]), max_points), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(ctx: AppContext, user: User, job_id: str, max_points: int) -> AsyncIterator[bytes]:
    last_status: dict[str, object] | None = None
    last_step: dict[str, int] = {}
    beat = time.monotonic()
    while True:
        status, updates = await run_in_threadpool(_read, ctx, user, job_id, last_step, max_points)
        if status != last_status:
            last_status = status
            yield _event("status", status)
        for update in updates:
            last_step[update["name"]] = int(update["steps"][-1])
            yield _event("metrics", update)
        if status["status"] in TERMINAL_JOB_STATUSES and not updates:
            yield _event("end", {"status": status["status"]})
            return
        if time.monotonic() - beat >= HEARTBEAT_S:
            beat = time.monotonic()
            yield b": heartbeat\n\n"
        await asyncio.sleep(LIVE_POLL_S)


def _read(ctx: AppContext, user: User, job_id: str, last_step: dict[str, int],
          max_points: int) -> tuple[dict[str, object], list[dict[str, Any]]]:
    status = read_status(ctx.db, user, job_id)
    updates = []
    with ctx.db.session() as session:
        for summary in runs.job_metrics(session, user, job_id).series:
            seen = last_step.get(summary.name)
            if seen is not None and summary.step <= seen:
                continue
            series = runs.read_series(session, user, job_id, summary.name,
                                      max_points=max_points if seen is None else None, after_step=seen)
            if len(series["steps"]):  # type: ignore[arg-type]
                updates.append({"name": summary.name, "total": series["total"], "steps": series["steps"],
                                "values": series["values"], "fresh": seen is None})
    return {k: status[k] for k in ("id", "status", "status_reason", "pending_reason")}, updates
