"""Request body limits on every endpoint, enforced while the body is read.

``BodyLimitMiddleware`` gives each request a byte limit (``settings.max_code_bytes`` for the code upload,
``settings.max_request_bytes`` for everything else) and refuses a larger body with 413 and deepdock's JSON
error, without ever holding more than the chunk in hand:

- a declared ``Content-Length`` above the limit is answered at once; the app is not called and no body
  byte is read;
- otherwise (a chunked body, or a server that does not enforce the declared length) the ``http.request``
  messages are counted as the app reads them; the message that crosses the limit is not handed on: the
  413 goes out, the app gets ``http.disconnect`` (so it stops reading), and what it sends afterwards is
  dropped.

The 413 carries ``Connection: close``, so the server closes the connection instead of reading and
discarding the rest of the body (a client could otherwise keep one busy for as long as it likes).

Plain ASGI for the same reason as ``app.TimingMiddleware``: Starlette's BaseHTTPMiddleware costs a large
share of a small request's time. (Starlette's own RequestBodyLimitMiddleware answers in plain text, with
one limit per app or route, and raises inside the app's ``receive``.)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from deepdock.errors import DeepdockError, PayloadTooLargeError
from deepdock.settings import Settings

log = logging.getLogger("deepdock.server")


class BadRequestError(DeepdockError):
    """A request the HTTP layer cannot take (here: a malformed Content-Length)."""

    status_code = 400
    code = "bad_request"


def error_response(error: DeepdockError) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of ``error`` as the app's exception handler would answer it, plus
    ``Connection: close``: the rest of the request body is never read."""
    body = json.dumps({"error": error.to_dict()}).encode()
    start = {"type": "http.response.start", "status": error.status_code,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length header's value; None when absent. Raises BadRequestError when it is not a
    non-negative decimal integer, or when several headers disagree."""
    values = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() for v in values):  # bytes.isdigit: ASCII digits only
        shown = b", ".join(sorted(values)).decode("latin-1")
        raise BadRequestError(f"malformed Content-Length header: {shown!r}", details={"content_length": shown})
    return int(values.pop())


class BodyLimitMiddleware:
    """Limits read from ``settings`` on each request (so a changed setting applies at once): the code
    upload path gets ``max_code_bytes``, every other path ``max_request_bytes``."""

    def __init__(self, app, settings: Settings, code_path: str) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.settings = settings
        self.code_path = code_path

    def limit_for(self, path: str) -> tuple[int, str]:
        """The limit of a request to ``path`` and the setting that sets it."""
        if path == self.code_path:
            return self.settings.max_code_bytes, "max_code_bytes"
        return self.settings.max_request_bytes, "max_request_bytes"

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        try:
            declared = declared_length(scope["headers"])
        except BadRequestError as exc:
            for message in error_response(exc):
                await send(message)
            return
        if declared is not None and declared > limit:
            too_large = PayloadTooLargeError(
                f"request body is {declared} bytes; the limit is {limit} (settings.{setting})",
                details={"limit_bytes": limit, "content_length": declared})
            for message in error_response(too_large):
                await send(message)
            return

        received = 0
        app_started = False  # the app sent http.response.start (then no 413 can go out)
        refused = False  # the limit was crossed: the app only gets http.disconnect from now on
        answered = False  # the 413 went out: whatever the app sends is dropped

        async def limited_receive():  # type: ignore[no-untyped-def]
            nonlocal received, refused, answered
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received <= limit:
                return message
            refused = True
            if not app_started:
                too_large = PayloadTooLargeError(
                    f"request body exceeds the limit of {limit} bytes (settings.{setting})",
                    details={"limit_bytes": limit, "received_bytes": received})
                for reply in error_response(too_large):
                    await send(reply)
                answered = True
            return {"type": "http.disconnect"}

        async def guarded_send(message) -> None:  # type: ignore[no-untyped-def]
            nonlocal app_started
            if answered:
                return
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # After the 413, the app's reaction to the disconnect (Starlette's ClientDisconnect from a
            # route that streams the body itself) is expected, not a server error.
            if not answered:
                raise
            log.debug("after a 413 on %s the app raised", scope["path"], exc_info=True)
