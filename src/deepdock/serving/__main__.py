"""``python -m deepdock.serving``: serve the bundle in ``--model-dir`` until SIGTERM (the requests in flight
finish first). ``--http asgi`` runs the same server under uvicorn instead of deepdock's own HTTP front
(serving/http.py): the baseline the benchmarks compare it with."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from deepdock.serving.app import DEFAULT_MAX_BODY_BYTES, ModelServer, ServingConfig, asgi_app
from deepdock.serving.bundle import BundleError, read_bundle
from deepdock.serving.http import serve
from deepdock.serving.runtimes import RuntimeUnavailable, load_runtime

DEFAULT_PORT = 8080
MS = 1000.0


def _env(name: str, default: str) -> str:
    return os.environ.get(f"DEEPDOCK_SERVING_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deepdock.serving", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path(_env("MODEL_DIR", "/model")))
    parser.add_argument("--host", default=_env("HOST", "0.0.0.0"))  # noqa: S104 - a container's own port
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(DEFAULT_PORT))))
    parser.add_argument("--max-batch-size", type=int, default=int(_env("MAX_BATCH_SIZE", "32")))
    parser.add_argument("--max-wait-ms", type=float, default=float(_env("MAX_WAIT_MS", "2")))
    parser.add_argument("--threads", type=int, default=int(_env("THREADS", "0")),
                        help="the runtime's compute threads (0: its default)")
    parser.add_argument("--max-body-bytes", type=int, default=int(_env("MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))))
    parser.add_argument("--http", choices=["own", "asgi"], default=_env("HTTP", "own"),
                        help="own: deepdock's HTTP/1.1 front (serving/http.py); asgi: the same server under uvicorn")
    return parser.parse_args(argv)


def build_server(args: argparse.Namespace) -> ModelServer:
    model, path = read_bundle(args.model_dir)
    predict = load_runtime(model.runtime, path, model.inputs, model.outputs, args.threads)
    config = ServingConfig(max_batch_size=args.max_batch_size, max_wait_s=args.max_wait_ms / MS,
                           max_body_bytes=args.max_body_bytes)
    return ModelServer(model, predict, config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = build_server(args)
    except (BundleError, RuntimeUnavailable, ValueError) as exc:
        print(f"deepdock.serving: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.http == "own":
        asyncio.run(serve(server, args.host, args.port))
        return 0
    import uvicorn

    # asyncio's own loop and httptools' parser: what the serving image has (uvloop is left out of it,
    # envs/serving_image.py), so a test or a benchmark here runs what a container runs.
    uvicorn.run(asgi_app(server), host=args.host, port=args.port, log_level="warning", access_log=False,
                lifespan="on", timeout_graceful_shutdown=10, loop="asyncio", http="httptools")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
