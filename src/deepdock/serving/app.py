"""The model server: the Open Inference Protocol (KServe v2) over HTTP, independent of the HTTP layer.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/NAME[/versions/V]`` (model metadata from the version's signature),
``GET /v2/models/NAME[/versions/V]/ready``, ``POST /v2/models/NAME[/versions/V]/infer`` and
``GET /metrics`` (Prometheus). Errors are ``{"error": "..."}`` with 400 (a bad request, naming the input),
404, 405, 413 (a body over ``max_body_bytes``) or 500 (the model failed); the server keeps serving.

``ModelServer.respond`` takes a parsed request and gives a ``Reply`` at once, or a ``PendingInfer`` whose
future the batcher resolves, turned into a ``Reply`` by ``finish``: no coroutine or task per request, so
the HTTP front (``serving/http.py``) writes the answer from the future's callback. ``asgi_app`` runs the
same core under any ASGI server (uvicorn): the "before" of the figures in docs/benchmarks.md.

Why no framework: the per-request cost of a framework's routing, validation and response models is about
100 µs, several times what this whole path costs (benchmarks/); the protocol is small enough to route by
hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from deepdock.serving.batching import Batcher, ModelError
from deepdock.serving.metrics import ServingMetrics
from deepdock.serving.protocol import BINARY_TYPE, HEADER_LENGTH, JSON_TYPE, encode_response, parse_request
from deepdock.serving.runtimes import Predict
from deepdock.serving.tensors import InvalidTensor, TensorSpec, conform

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SERVER_NAME = "deepdock"
PROTOCOL_EXTENSIONS = ["binary_tensor_data"]
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    runtime: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True)
class ServingConfig:
    max_batch_size: int = 32
    max_wait_s: float = 0.002
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class PendingInfer:
    """An inference handed to the batcher: ``future`` resolves with its outputs (or ``ModelError``)."""

    future: asyncio.Future[dict[str, np.ndarray]]
    request_id: str | None
    wanted: list[str]
    binary: set[str] | bool
    started: float


class ModelServer:
    def __init__(self, model: ServedModel, predict: Predict, config: ServingConfig) -> None:
        self.model = model
        self.config = config
        self.in_flight = 0
        self.batcher = Batcher(predict, config.max_batch_size, config.max_wait_s)
        self.metrics = ServingMetrics(model.name, config.max_batch_size, queued=lambda: self.batcher.queued,
                                      in_flight=lambda: self.in_flight)
        self.batcher.observe = self.metrics.batch
        self.ready = False
        self._inputs = {spec.name: spec for spec in model.inputs}
        self._output_names = [spec.name for spec in model.outputs]
        prefix = f"/v2/models/{model.name}"
        self._model_paths = {prefix, f"{prefix}/versions/{model.version}"}
        self._metadata = orjson.dumps({
            "name": model.name, "versions": [model.version], "platform": model.runtime,
            "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in model.inputs],
            "outputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in model.outputs],
        })
        self._server_metadata = orjson.dumps({"name": SERVER_NAME, "version": _version(),
                                              "extensions": PROTOCOL_EXTENSIONS})

    def start(self) -> None:
        """Start batching (on the running loop) and answer ready."""
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()

    def respond(self, method: str, path: str, body: bytes, header_length: bytes | None) -> Reply | PendingInfer:
        """The answer to one request whose body was read whole (within ``max_body_bytes``): a ``Reply``,
        or for an inference the batcher's ``PendingInfer`` (``finish`` it once its future is done)."""
        path = path.rstrip("/") or "/"
        try:
            if path.endswith("/infer"):
                if path[: -len("/infer")] not in self._model_paths:
                    raise HttpError(404, f"no model {path[len('/v2/models/'):-len('/infer')]!r} here; "
                                         f"this server serves {self.model.name!r} version {self.model.version}")
                if method != "POST":
                    raise HttpError(405, "infer takes POST")
                return self._infer(body, header_length)
            if method != "GET":
                raise HttpError(405, f"{path} takes GET")
            return self._get(path)
        except HttpError as exc:
            return error_reply(exc.status, exc.message)

    def _get(self, path: str) -> Reply:
        if path == "/v2/health/live":
            return Reply(200, b'{"live":true}')
        if path == "/v2/health/ready":
            return Reply(200, b'{"ready":true}') if self.ready else Reply(503, b'{"ready":false}')
        if path == "/v2":
            return Reply(200, self._server_metadata)
        if path in self._model_paths:
            return Reply(200, self._metadata)
        if path.endswith("/ready") and path[: -len("/ready")] in self._model_paths:
            return Reply(200 if self.ready else 503, orjson.dumps({"name": self.model.name, "ready": self.ready}))
        if path == "/metrics":
            return Reply(200, self.metrics.exposition(), b"text/plain; version=0.0.4")
        raise HttpError(404, f"no route {path}")

    def _infer(self, body: bytes, header_length: bytes | None) -> Reply | PendingInfer:
        started = time.perf_counter()
        try:
            try:
                length = None if header_length is None else int(header_length)
            except ValueError:
                raise HttpError(400, "Inference-Header-Content-Length is not a number") from None
            try:
                request = parse_request(body, length)
                inputs = self._conform(request.inputs)
                wanted = request.outputs or self._output_names
                unknown = [n for n in wanted if n not in self._output_names]
                if unknown:
                    raise InvalidTensor(f"no output {unknown[0]!r}; the model's outputs are {self._output_names}")
            except InvalidTensor as exc:
                raise HttpError(400, str(exc)) from None
        except HttpError as exc:
            self.metrics.request(exc.status, time.perf_counter() - started)
            return error_reply(exc.status, exc.message)
        self.in_flight += 1
        binary: set[str] | bool = True if request.all_binary else request.binary_outputs
        return PendingInfer(self.batcher.submit(inputs), request.id, wanted, binary, started)

    def finish(self, pending: PendingInfer) -> Reply:
        """The reply to an inference whose future is done (its outputs, or the model's failure)."""
        self.in_flight -= 1
        try:
            outputs = pending.future.result()
        except ModelError as exc:
            self.metrics.request(500, time.perf_counter() - pending.started)
            return error_reply(500, f"the model failed: {exc}")
        except asyncio.CancelledError:  # the batcher stopped first (shutdown past its grace)
            self.metrics.request(503, time.perf_counter() - pending.started)
            return error_reply(503, "the server is shutting down")
        payload, length = encode_response(self.model.name, self.model.version, pending.request_id,
                                          [(n, outputs[n]) for n in pending.wanted], pending.binary)
        self.metrics.request(200, time.perf_counter() - pending.started)
        if length is None:
            return Reply(200, payload)
        return Reply(200, payload, BINARY_TYPE, ((HEADER_LENGTH.encode(), str(length).encode()),))

    def _conform(self, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self._inputs if name not in given]
        if missing:
            raise InvalidTensor(f"missing input {missing[0]!r}; the model takes "
                                + ", ".join(f"{s.name} ({s.describe()})" for s in self._inputs.values()))
        extra = [name for name in given if name not in self._inputs]
        if extra:
            raise InvalidTensor(f"no input {extra[0]!r}; the model takes {list(self._inputs)}")
        arrays = {name: conform(self._inputs[name], given[name]) for name in self._inputs}
        rows = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(rows) > 1:
            raise InvalidTensor(f"the inputs disagree on the batch size: {sorted(rows)}")
        return arrays


def error_reply(status: int, message: str) -> Reply:
    return Reply(status, orjson.dumps({"error": message}))


def asgi_app(server: ModelServer) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The same server as an ASGI application (lifespan included), for any ASGI server."""
    too_large = error_reply(413, f"the body is larger than {server.config.max_body_bytes} bytes")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    server.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await server.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        header_length: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > server.config.max_body_bytes:
                await _send(send, too_large)
                return
            if key == HEADER_LENGTH.encode():
                header_length = value
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > server.config.max_body_bytes:
                await _send(send, too_large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        reply = server.respond(scope["method"], scope["path"], b"".join(chunks), header_length)
        if isinstance(reply, PendingInfer):
            await asyncio.wait([reply.future])
            reply = server.finish(reply)
        await _send(send, reply)

    return app


async def _send(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status,
                "headers": [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()),
                            *reply.headers]})
    await send({"type": "http.response.body", "body": reply.body})


def _version() -> str:
    try:
        from deepdock import __version__
    except ImportError:  # the serving files alone, copied into an image without the package's root
        return "unknown"
    return str(__version__)
