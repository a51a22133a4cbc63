"""deepdock's HTTP/1.1 front (serving/http.py) on a real loopback socket, spoken to byte by byte: what
HAProxy, curl and client libraries rely on. The model is a Python function (a doubling, or one that
sleeps), so each case controls how long an inference takes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from deepdock.serving.app import ModelServer, ServedModel, ServingConfig
from deepdock.serving.http import HttpFront
from deepdock.serving.tensors import TensorSpec

MAX_BODY = 4096
SPEC = [TensorSpec("x", "float32", (-1, 2))]
OUT = [TensorSpec("y", "float32", (-1, 2))]


def _body(values: list[float], request_id: str = "r") -> bytes:
    return orjson.dumps({"id": request_id, "inputs": [{"name": "x", "shape": [len(values) // 2, 2],
                                                       "datatype": "FP32", "data": values}]})


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /v2/models/m/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n%s" % (len(body), extra, body))


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


def _run(case: Callable[[int, ModelServer, HttpFront], Awaitable[None]], delay_s: float = 0.0) -> None:
    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if delay_s:
            time.sleep(delay_s)
        return {"y": inputs["x"] * 2}

    async def main() -> None:
        server = ModelServer(ServedModel("m", "1", "onnx", SPEC, OUT), predict,
                             ServingConfig(max_batch_size=8, max_wait_s=0.0, max_body_bytes=MAX_BODY))
        front = HttpFront(server)
        await front.start("127.0.0.1", 0)
        port = front._listener.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(case(port, server, front), 20)
        finally:
            await front.stop(grace_s=1)

    asyncio.run(main())


def test_keep_alive_then_close_as_the_client_asks():
    async def case(port: int, server: ModelServer, front: HttpFront) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):  # one connection, three requests
            writer.write(_post(_body([i, 1.0])))
            status, headers, body = await _read_reply(reader)
            assert status == 200 and b"connection" not in headers and b"date" in headers
            assert orjson.loads(body)["outputs"][0]["data"] == [2.0 * i, 2.0]
        writer.write(_post(_body([1, 1]), b"connection: close\r\n"))
        status, headers, _ = await _read_reply(reader)
        assert status == 200 and headers[b"connection"] == b"close"
        assert await reader.read() == b""  # the server closed it
        # HTTP/1.0: closed after the reply unless it asks to keep it, and then told it may.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/health/ready HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        status, headers, _ = await _read_reply(reader)
        assert status == 200 and headers[b"connection"] == b"keep-alive"
        writer.write(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        assert (await _read_reply(reader))[0] == 200 and await reader.read() == b""

    _run(case)


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slow():
    async def case(port: int, server: ModelServer, front: HttpFront) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # An inference (slow), a GET (instant) and another inference, in one write.
        writer.write(_post(_body([1, 2], "first")) + b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n"
                     + _post(_body([3, 4], "third")))
        first, second, third = [await _read_reply(reader) for _ in range(3)]
        assert orjson.loads(first[2])["id"] == "first" and second[2] == b'{"live":true}'
        assert orjson.loads(third[2])["id"] == "third"

    _run(case, delay_s=0.2)


def test_chunked_bodies_and_expect_continue():
    async def case(port: int, server: ModelServer, front: HttpFront) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = _body([5, 6])
        writer.write(b"POST /v2/models/m/infer HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 10, body[10:]))
        status, _, reply = await _read_reply(reader)
        assert status == 200 and orjson.loads(reply)["outputs"][0]["data"] == [10.0, 12.0]
        # curl sends a large body only after "100 Continue".
        writer.write(b"POST /v2/models/m/infer HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n"
                     b"expect: 100-continue\r\n\r\n" % len(body))
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await _read_reply(reader))[0] == 200

    _run(case)


def test_too_large_malformed_and_upgrade_requests_are_answered_then_closed():
    async def case(port: int, server: ModelServer, front: HttpFront) -> None:
        for request, status, message in (
            (b"POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (MAX_BODY + 1), 413, b"larger than"),
            (b"POST /v2/models/m/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n"
             % (MAX_BODY + 1, b"x" * (MAX_BODY + 1)), 413, b"larger than"),
            (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", 400, b"malformed HTTP request"),
            (b"GET / HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n", 400, b"upgrades"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            got, headers, body = await _read_reply(reader)
            assert got == status and message in body and headers[b"connection"] == b"close"
            assert await reader.read() == b""
        # ... and the server goes on serving.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post(_body([1, 1])))
        assert (await _read_reply(reader))[0] == 200
        assert server.metrics.codes[413] == 2

    _run(case)


def test_stopping_finishes_the_request_in_flight_and_refuses_new_connections():
    async def case(port: int, server: ModelServer, front: HttpFront) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post(_body([7, 8])))
        await asyncio.sleep(0.05)  # the inference is in the batcher now
        stopping = asyncio.create_task(front.stop(grace_s=5))
        status, headers, body = await _read_reply(reader)
        assert status == 200 and headers[b"connection"] == b"close"
        assert orjson.loads(body)["outputs"][0]["data"] == [14.0, 16.0]
        await stopping
        assert not server.ready
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            pass
        else:
            raise AssertionError("a stopped server still accepts connections")

    _run(case, delay_s=0.3)
