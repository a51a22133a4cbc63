"""The model server's HTTP/1.1 front: an asyncio protocol on httptools' parser (llhttp, the parser under
uvicorn and Node.js) that hands each whole request to ``ModelServer.respond`` and writes the reply from
the batcher future's callback.

Why not uvicorn, which ran it until 2026-12-07: under uvicorn every request builds an ASGI scope, message
dicts and a task of its own, and the bare-ASGI floor alone cost 29.5-42 µs a request on this machine;
the identity figure of issue 13 (≤ 50 µs for the whole server) left the model server ~10 µs for its own
work on top of it. Here a request is a parser callback, one call into the server and one ``write``
(docs/benchmarks.md has the figures, uvicorn measured beside it in the same run: ``--http asgi``).

What it implements, which is what HAProxy (the gateway), curl and HTTP client libraries use:
- HTTP/1.1 and 1.0, keep-alive as the request asks (httptools' ``should_keep_alive``), ``connection:
  close`` on the last reply; requests of one connection answered in order (pipelined ones wait, and
  reading pauses while one is in flight);
- bodies by Content-Length or chunked (the parser decodes them), ``Expect: 100-continue``, a body limit
  (413 before reading a declared body over it, or as soon as a chunked one passes it, then close);
- 400 and close on a request the parser rejects (or an upgrade: no WebSockets or h2c here);
- ``date`` on every reply (cached for the second), backpressure (reading pauses while the transport's
  write buffer is full), idle keep-alive connections closed after ``KEEPALIVE_TIMEOUT_S``;
- graceful stop: on SIGTERM/SIGINT it stops listening and answering ready, lets the requests in flight
  finish (at most ``SHUTDOWN_GRACE_S``), closes every connection and stops the batcher.
"""

from __future__ import annotations

import asyncio
import email.utils
import signal
import time
from collections import deque
from http import HTTPStatus

import httptools

from deepdock.serving.app import ModelServer, PendingInfer, Reply, error_reply
from deepdock.serving.protocol import HEADER_LENGTH

KEEPALIVE_TIMEOUT_S = 5.0  # as uvicorn's default: HAProxy reopens a closed idle connection on its own
SHUTDOWN_GRACE_S = 10.0
SWEEP_INTERVAL_S = 1.0
_HEADER_LENGTH = HEADER_LENGTH.encode()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


class _Clock:
    """The ``date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._header = b""

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._header


class _Request:
    __slots__ = ("method", "path", "body", "header_length", "keep_alive", "http10")

    def __init__(self, method: str, path: str, body: bytes, header_length: bytes | None, keep_alive: bool,
                 http10: bool) -> None:
        self.method, self.path, self.body = method, path, body
        self.header_length, self.keep_alive, self.http10 = header_length, keep_alive, http10


class HttpConnection(asyncio.Protocol):
    """One client connection (parser callbacks are httptools' names)."""

    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.server = front.server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[_Request] = deque()  # parsed, not yet answered (pipelined)
        self.busy = False  # a reply is being computed (an inference in the batcher)
        self.closing = False
        self.last_active = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.chunks: list[bytes] = []
        self.size = 0
        self.header_length: bytes | None = None
        self.rejected = False  # answered already (413): the rest of this message is ignored

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.front.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answered at its headers already
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        if not self.closing:
            self.transport.resume_reading()

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            if value.isdigit() and int(value) > self.server.config.max_body_bytes:
                self._reject_too_large()
        elif name == _HEADER_LENGTH:
            self.header_length = value
        elif name == b"expect" and value.lower() == b"100-continue" and not self.rejected:
            self._write_raw(_CONTINUE)

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() and not self.rejected:
            self.rejected = True
            self._fail(400, "protocol upgrades are not supported")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.server.config.max_body_bytes:
            self._reject_too_large()
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.rejected or self.closing:
            return
        url = self.url
        if not url.startswith(b"/"):  # absolute-form (a proxy's request line)
            url = httptools.parse_url(url).path or b"/"
        path = url.split(b"?", 1)[0].decode("latin-1")
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        request = _Request(self.parser.get_method().decode("latin-1"), path, body, self.header_length,
                           self.parser.should_keep_alive(), self.parser.get_http_version() == "1.0")
        if self.busy or self.waiting:
            self.waiting.append(request)
            assert self.transport is not None
            self.transport.pause_reading()
            return
        self._answer(request)

    # -- answering
    def _answer(self, request: _Request) -> None:
        reply = self.server.respond(request.method, request.path, request.body, request.header_length)
        if isinstance(reply, PendingInfer):
            self.busy = True
            reply.future.add_done_callback(lambda _: self._finished(reply, request))
            return
        self._send(reply, request.keep_alive, request.http10)

    def _finished(self, pending: PendingInfer, request: _Request) -> None:
        self.busy = False
        self._send(self.server.finish(pending), request.keep_alive, request.http10)
        while self.waiting and not self.busy and not self.closing:
            self._answer(self.waiting.popleft())
        if not self.waiting and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def _send(self, reply: Reply, keep_alive: bool, http10: bool = False) -> None:
        """One write of the head and (up to 64 KiB) the body; an HTTP/1.0 client is told it may keep the
        connection, a 1.1 one assumes it."""
        keep_alive = keep_alive and not self.front.stopping
        size = len(reply.body)
        head = b"%scontent-type: %s\r\ncontent-length: %d\r\n%s%s%s" % (
            _STATUS_LINES.get(reply.status) or b"HTTP/1.1 %d Unknown\r\n" % reply.status, reply.content_type, size,
            b"".join(b"%s: %s\r\n" % header for header in reply.headers) if reply.headers else b"",
            self.front.clock.date_header(),
            (b"connection: keep-alive\r\n\r\n" if http10 else b"\r\n") if keep_alive else b"connection: close\r\n\r\n")
        if size < 65536:
            self._write_raw(head + reply.body)
        else:  # no copy of a large body: two writes (the transport sends what it can of each at once)
            self._write_raw(head)
            self._write_raw(reply.body)
        self.last_active = time.monotonic()
        if not keep_alive:
            self._close()

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _reject_too_large(self) -> None:
        self.rejected = True
        self._fail(413, f"the body is larger than {self.server.config.max_body_bytes} bytes")

    def _fail(self, status: int, message: str) -> None:
        """Answer and close: the rest of the stream cannot be trusted to be a next request."""
        if self.closing:
            return
        if status == 413:
            self.server.metrics.request(413, 0.0)
        self.waiting.clear()
        self._send(error_reply(status, message), keep_alive=False)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.waiting


class HttpFront:
    """The listening socket, its connections, and the idle sweep."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.connections: set[HttpConnection] = set()
        self.clock = _Clock()
        self.stopping = False
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        self.server.start()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: HttpConnection(self), host, port, backlog=2048,
                                                  reuse_address=True)
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop listening and answering ready; let the requests in flight finish; close everything."""
        self.stopping = True
        self.server.ready = False
        if self._listener is not None:
            self._listener.close()
        deadline = time.monotonic() + grace_s
        while any(not c.idle for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection._close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.server.stop()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            cutoff = time.monotonic() - KEEPALIVE_TIMEOUT_S
            for connection in list(self.connections):
                if connection.idle and connection.last_active < cutoff:
                    connection._close()


async def serve(server: ModelServer, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    front = HttpFront(server)
    await front.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await front.stop()
