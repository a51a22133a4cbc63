"""The model server: a bare ASGI application speaking the Open Inference Protocol (KServe v2) over HTTP.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/NAME[/versions/V]`` (model metadata from the version's signature),
``GET /v2/models/NAME[/versions/V]/ready``, ``POST /v2/models/NAME[/versions/V]/infer`` and
``GET /metrics`` (Prometheus). Errors are ``{"error": "..."}`` with 400 (a bad request, naming the input),
404, 405, 413 (a body over ``max_body_bytes``) or 500 (the model failed); the server keeps serving.

Why bare ASGI and not FastAPI: the per-request cost of a framework's routing, validation and response
models is about 100 µs, several times what this whole path costs (benchmarks/); the protocol is small
enough to route by hand, and uvicorn (httptools, uvloop) stays the proven part underneath.
"""

from __future__ import annotations

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except HttpError as exc:
            await _reply(send, exc.status, orjson.dumps({"error": exc.message}))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.batcher.start()
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                await self.batcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"].rstrip("/") or "/"
        method: str = scope["method"]
        if path.endswith("/infer"):
            if path[: -len("/infer")] not in self._model_paths:
                raise HttpError(404, f"no model {path[len('/v2/models/'):-len('/infer')]!r} here; "
                                     f"this server serves {self.model.name!r} version {self.model.version}")
            if method != "POST":
                raise HttpError(405, "infer takes POST")
            await self._infer(scope, receive, send)
            return
        if method != "GET":
            raise HttpError(405, f"{path} takes GET")
        if path == "/v2/health/live":
            await _reply(send, 200, b'{"live":true}')
        elif path == "/v2/health/ready":
            await _reply(send, 200 if self.ready else 503, b'{"ready":true}' if self.ready else b'{"ready":false}')
        elif path == "/v2":
            await _reply(send, 200, self._server_metadata)
        elif path in self._model_paths:
            await _reply(send, 200, self._metadata)
        elif path.endswith("/ready") and path[: -len("/ready")] in self._model_paths:
            await _reply(send, 200 if self.ready else 503, orjson.dumps({"name": self.model.name,
                                                                         "ready": self.ready}))
        elif path == "/metrics":
            await _reply(send, 200, self.metrics.exposition(), b"text/plain; version=0.0.4")
        else:
            raise HttpError(404, f"no route {path}")

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        self.in_flight += 1
        status = 200
        try:
            header_length: int | None = None
            for key, value in scope["headers"]:
                if key == b"content-length" and int(value) > self.config.max_body_bytes:
                    raise HttpError(413, f"the body is larger than {self.config.max_body_bytes} bytes")
                if key == HEADER_LENGTH.encode():
                    try:
                        header_length = int(value)
                    except ValueError:
                        raise HttpError(400, "Inference-Header-Content-Length is not a number") from None
            body = await _read_body(receive, self.config.max_body_bytes)
            try:
                request = parse_request(body, header_length)
                inputs = self._conform(request.inputs)
                wanted = request.outputs or self._output_names
                unknown = [n for n in wanted if n not in self._output_names]
                if unknown:
                    raise InvalidTensor(f"no output {unknown[0]!r}; the model's outputs are {self._output_names}")
            except InvalidTensor as exc:
                raise HttpError(400, str(exc)) from None
            try:
                outputs = await self.batcher.infer(inputs)
            except ModelError as exc:
                raise HttpError(500, f"the model failed: {exc}") from None
            binary: set[str] | bool = True if request.all_binary else request.binary_outputs
            payload, length = encode_response(self.model.name, self.model.version, request.id,
                                              [(n, outputs[n]) for n in wanted], binary)
            extra = [(HEADER_LENGTH.encode(), str(length).encode())] if length is not None else []
            await _reply(send, 200, payload, BINARY_TYPE if length is not None else JSON_TYPE, extra)
        except HttpError as exc:
            status = exc.status
            raise
        finally:
            self.in_flight -= 1
            self.metrics.request(status, time.perf_counter() - started)

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


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "the client went away before the body was read")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _reply(send: Send, status: int, body: bytes, content_type: bytes = JSON_TYPE,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    try:
        from deepdock import __version__
    except ImportError:  # the serving files alone, copied into an image without the package's root
        return "unknown"
    return str(__version__)
