"""FastAPI dependencies: the app's state, a DB session per request, the authenticated user."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from deepdock.server.context import AppContext
from deepdock.server.db.models import User
from deepdock.server.services.auth import authenticate

# Token lookups are cached briefly: status polling at 1,000 req/s should not hash-and-query every time.
TOKEN_CACHE_TTL_S = 5.0


@dataclass
class TokenCache:
    entries: dict[str, tuple[float, User]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, token: str) -> User | None:
        with self.lock:
            hit = self.entries.get(token)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    def put(self, token: str, user: User) -> None:
        with self.lock:
            if len(self.entries) > 10_000:
                self.entries.clear()
            self.entries[token] = (time.monotonic() + TOKEN_CACHE_TTL_S, user)


async def get_ctx(request: Request) -> AppContext:
    # async: FastAPI runs sync dependencies on its thread pool, a hop this lookup does not need.
    return request.app.state.ctx  # type: ignore[no-any-return]


def get_session(ctx: AppContext = Depends(get_ctx)) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


def _authenticate(ctx: AppContext, token: str) -> User:
    with ctx.db.session() as session:
        user = authenticate(session, token)
        session.expunge(user)
        return user


async def current_user(request: Request, ctx: AppContext = Depends(get_ctx)) -> User:
    """The token's user; a cached lookup costs no thread hop and no query (status polling is hot)."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    cache: TokenCache = request.app.state.token_cache
    user = cache.get(token) if token else None
    if user is None:
        user = await run_in_threadpool(_authenticate, ctx, token)
        cache.put(token, user)
    return user
