"""Request body limits (server/body_limit.py): 413 with deepdock's JSON error, enforced while the body is read.

Three levels: the middleware alone with fake ``receive``/``send`` (what it reads and hands on, chunk by chunk);
the app through a TestClient; and the app behind a real uvicorn on a socket.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from deepdock.compute.pool import KIND_FAKE
from deepdock.server.app import create_app
from deepdock.server.body_limit import BodyLimitMiddleware
from deepdock.settings import Settings
from tests.server.conftest import FakeCluster

LIMIT = 64 * 1024
CODE_LIMIT = 256 * 1024
CHUNK = 16 * 1024
CODE_PATH = "/api/v1/code"


# -- the middleware alone ---------------------------------------------------------------------------------


class Recorder:
    """An ASGI app that reads the whole body (until ``more_body`` is false or a disconnect), then answers
    200 with what it got."""

    def __init__(self, *, respond_first: bool = False) -> None:
        self.called = False
        self.messages: list[dict[str, Any]] = []
        self.respond_first = respond_first

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        self.called = True
        if self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        size = 0
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if not self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def scope(path: str = "/api/v1/jobs", headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}


def drive(app, scope_: dict[str, Any], chunks: list[bytes]) -> tuple[list[dict[str, Any]], int]:  # type: ignore[no-untyped-def]
    """Run ``BodyLimitMiddleware(app)`` on one request whose body arrives as ``chunks``. Returns what it sent
    and how many chunks it pulled from the server."""
    settings = Settings(max_request_bytes=LIMIT, max_code_bytes=CODE_LIMIT)
    middleware = BodyLimitMiddleware(app, settings=settings, code_path=CODE_PATH)
    sent: list[dict[str, Any]] = []
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled == len(chunks):
            await asyncio.sleep(3600)  # a server answers a read past the end only at disconnect
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(middleware(scope_, receive, send), 5))
    return sent, pulled


def status_and_error(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    start, body = sent
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    assert (b"connection", b"close") in start["headers"]
    assert (b"content-type", b"application/json") in start["headers"]
    return start["status"], json.loads(body["body"])["error"]


def test_a_declared_length_over_the_limit_is_413_before_the_app_runs_or_a_byte_is_read():
    app = Recorder()
    sent, pulled = drive(app, scope(headers={"content-length": str(300 * 1024 * 1024)}), [b"x" * CHUNK] * 4)
    status, error = status_and_error(sent)
    assert (status, error["code"]) == (413, "payload_too_large")
    assert error["details"] == {"limit_bytes": LIMIT, "content_length": 300 * 1024 * 1024}
    assert "max_request_bytes" in error["message"]
    assert not app.called and pulled == 0


def test_a_chunked_body_over_the_limit_is_413_after_reading_just_past_the_limit():
    app = Recorder()
    chunks = [b"x" * CHUNK] * 1000  # 16 MiB in all, no Content-Length
    sent, pulled = drive(app, scope(headers={"transfer-encoding": "chunked"}), chunks)
    status, error = status_and_error(sent)  # the app's own 200 afterwards was dropped
    assert (status, error["code"]) == (413, "payload_too_large")
    assert pulled == LIMIT // CHUNK + 1  # stopped at the chunk that crossed the limit
    assert error["details"] == {"limit_bytes": LIMIT, "received_bytes": pulled * CHUNK}
    # The app saw the chunks under the limit, then a disconnect instead of the crossing chunk.
    assert [m["type"] for m in app.messages] == ["http.request"] * (LIMIT // CHUNK) + ["http.disconnect"]


def test_a_body_at_the_limit_passes_whole():
    app = Recorder()
    chunks = [b"x" * CHUNK] * (LIMIT // CHUNK)
    sent, pulled = drive(app, scope(headers={"content-length": str(LIMIT)}), chunks)
    assert sent[0]["status"] == 200 and sent[1]["body"] == str(LIMIT).encode()
    assert pulled == len(chunks)


def test_the_code_upload_path_has_its_own_limit():
    chunks = [b"x" * CHUNK] * (2 * LIMIT // CHUNK)  # over max_request_bytes, under max_code_bytes
    sent, _ = drive(Recorder(), scope(CODE_PATH), chunks)
    assert sent[0]["status"] == 200
    sent, _ = drive(Recorder(), scope(CODE_PATH, {"content-length": str(CODE_LIMIT + 1)}), [])
    status, error = status_and_error(sent)
    assert status == 413 and "max_code_bytes" in error["message"] and error["details"]["limit_bytes"] == CODE_LIMIT


@pytest.mark.parametrize("headers", [
    [(b"content-length", b"abc")],
    [(b"content-length", b"-5")],
    [(b"content-length", b"1e3")],
    [(b"content-length", b"10"), (b"content-length", b"20")],
])
def test_a_malformed_content_length_is_400(headers):
    app = Recorder()
    sent, _ = drive(app, {**scope(), "headers": headers}, [b"x" * 10])
    status, error = status_and_error(sent)
    assert (status, error["code"]) == (400, "bad_request") and "Content-Length" in error["message"]
    assert not app.called


def test_an_app_that_answered_before_reading_keeps_its_response():
    app = Recorder(respond_first=True)
    sent, _ = drive(app, scope(), [b"x" * CHUNK] * 100)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and app.messages[-1]["type"] == "http.disconnect"


def test_lifespan_and_websocket_scopes_pass_through():
    seen = []

    async def app(scope_, receive, send):  # type: ignore[no-untyped-def]
        seen.append((scope_["type"], receive, send))

    middleware = BodyLimitMiddleware(app, settings=Settings(), code_path=CODE_PATH)

    async def receive():  # type: ignore[no-untyped-def]
        return {}

    async def send(_):  # type: ignore[no-untyped-def]
        return None

    asyncio.run(middleware({"type": "lifespan"}, receive, send))
    assert seen == [("lifespan", receive, send)]


# -- the app through a TestClient -----------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", max_request_bytes=LIMIT, max_code_bytes=CODE_LIMIT)
    app = create_app(settings, factories={KIND_FAKE: FakeCluster().factory}, start_loops=False,
                     register_local_node=False)
    app.state.probe_calls = 0

    @app.post("/api/v1/probe")
    async def probe() -> dict[str, int]:
        app.state.probe_calls += 1
        return {"calls": app.state.probe_calls}

    return app


@pytest.fixture
def api(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {app.state.bootstrap_token}"
        yield client


def tar_of(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("main.py")
        info.size = size
        tar.addfile(info, io.BytesIO(b"#" * size))
    return buf.getvalue()


def test_an_over_limit_body_is_413_json_and_the_route_does_not_run(app, api):
    r = api.post("/api/v1/probe", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.headers["connection"] == "close"
    assert r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["details"] == {"limit_bytes": LIMIT, "content_length": LIMIT + 1}
    assert app.state.probe_calls == 0
    assert api.post("/api/v1/probe", content=b"x" * LIMIT).json() == {"calls": 1}


def test_an_over_limit_job_spec_is_413_and_nothing_is_stored(api):
    spec = {"name": "big", "image": "busybox:latest", "command": ["true"], "env": {"PAD": "x" * LIMIT}}
    r = api.post("/api/v1/jobs", json={"spec": spec})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert api.get("/api/v1/jobs").json() == []


def test_a_chunked_over_limit_body_is_413(api):
    def body() -> Iterator[bytes]:
        for _ in range(4 * LIMIT // CHUNK):
            yield b"x" * CHUNK

    r = api.post("/api/v1/jobs", content=body())  # no Content-Length (the TestClient hands it over whole)
    assert r.status_code == 413
    details = r.json()["error"]["details"]
    assert details["limit_bytes"] == LIMIT and details["received_bytes"] > LIMIT and "content_length" not in details


def test_under_limit_bodies_work(api):
    r = api.post("/api/v1/users", json={"name": "bob", "projects": ["default"]})
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/jobs", json={"spec": {"name": "x", "image": "busybox:latest", "colour": "red"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_spec"  # the route ran


def test_code_upload_is_limited_by_max_code_bytes(api):
    r = api.post(CODE_PATH, content=tar_of(2 * LIMIT))  # over max_request_bytes: the code limit applies
    assert r.status_code == 201, r.text
    r = api.post(CODE_PATH, content=tar_of(CODE_LIMIT))
    assert r.status_code == 413 and "max_code_bytes" in r.json()["error"]["message"]

    def body() -> Iterator[bytes]:
        for _ in range(2 * CODE_LIMIT // CHUNK):
            yield b"x" * CHUNK

    r = api.post(CODE_PATH, content=body())  # chunked: the route's stream is cut, its disconnect swallowed
    assert r.status_code == 413 and r.json()["error"]["details"]["limit_bytes"] == CODE_LIMIT


def test_a_malformed_content_length_is_400_json(api):
    r = api.post("/api/v1/jobs", content=b"{}", headers={"content-length": "two"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"


# -- the app behind uvicorn, over a socket ------------------------------------------------------------------


@pytest.fixture
def live(app) -> Iterator[int]:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def raw_post(port: int, head: str, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``head`` then ``chunks`` until the server answers or closes. Returns the response and the
    body bytes the client got into its socket."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        try:
            while part := sock.recv(65536):
                response += part
        except ConnectionResetError:
            pass
    return response, sent


def test_over_a_socket_an_over_limit_body_is_refused_before_it_is_all_sent(live):
    total = 64 * 1024 * 1024

    def body(chunked: bool) -> Iterator[bytes]:
        piece = b"x" * CHUNK
        for _ in range(total // CHUNK):
            yield b"%x\r\n%s\r\n" % (CHUNK, piece) if chunked else piece

    for header in (f"Content-Length: {total}", "Transfer-Encoding: chunked"):
        head = f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n{header}\r\nContent-Type: application/json\r\n\r\n"
        response, sent = raw_post(live, head, body("chunked" in header))
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413 "), (header, response[:200])
        assert b"connection: close" in rest.lower()
        assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"
        assert sent < total // 2, header  # the server closed; the client did not get to send it all


def test_over_a_socket_an_under_limit_body_reaches_the_route(live):
    body = b"x" * (LIMIT - 1)
    head = f"POST /api/v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    response, _ = raw_post(live, head, iter([body]))
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b'{"calls":1}')
