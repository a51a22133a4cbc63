"""``asgi_app``: the same ModelServer under any ASGI server (``--http asgi``), driven in process through
the ASGI lifespan and HTTP messages."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from deepdock.serving.app import ModelServer, ServedModel, ServingConfig, asgi_app
from deepdock.serving.tensors import TensorSpec

BODY = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})


def _serve(max_body: int, requests: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    """Start the app through lifespan, send each (method, body) to the infer route, shut it down."""
    spec = [TensorSpec("x", "float32", (-1, 2))]
    server = ModelServer(ServedModel("m", "1", "onnx", spec, [TensorSpec("y", "float32", (-1, 2))]),
                         lambda inputs: {"y": inputs["x"] * 3}, ServingConfig(max_body_bytes=max_body, max_wait_s=0.0))
    app = asgi_app(server)
    replies: list[tuple[int, bytes]] = []

    async def main() -> None:
        lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        done: list[str] = []

        async def lifespan_send(message: dict[str, Any]) -> None:
            done.append(message["type"])

        task = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, lifespan_send))
        await lifespan.put({"type": "lifespan.startup"})
        while "lifespan.startup.complete" not in done:
            await asyncio.sleep(0)
        assert server.ready
        for method, body in requests:
            sent: list[dict[str, Any]] = []

            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            await app({"type": "http", "method": method, "path": "/v2/models/m/infer",
                       "headers": [(b"content-length", str(len(body)).encode())]}, receive, send)
            replies.append((sent[0]["status"], sent[1]["body"]))
        await lifespan.put({"type": "lifespan.shutdown"})
        await task
        assert done[-1] == "lifespan.shutdown.complete" and not server.ready

    asyncio.run(main())
    return replies


def test_inference_errors_and_the_body_limit_as_on_the_own_front():
    (ok, wrong_method) = _serve(1024, [("POST", BODY), ("GET", b"")])
    assert ok[0] == 200 and orjson.loads(ok[1])["outputs"][0]["data"] == [3.0, 6.0]
    assert wrong_method[0] == 405 and b"infer takes POST" in wrong_method[1]
    ((status, reply),) = _serve(8, [("POST", BODY)])
    assert status == 413 and b"larger than 8 bytes" in reply
