"""Translate docker SDK / requests failures into ``deepdock.errors`` in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions
import urllib3.exceptions

from deepdock.errors import EngineError, EngineUnreachableError, ImageMissingError, NotFoundError

# Failures that mean "the engine did not answer", as opposed to "the engine said no".
_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
    FileNotFoundError,
)


def unreachable(engine_url: str, exc: BaseException) -> EngineUnreachableError:
    return EngineUnreachableError(f"container engine {engine_url} is unreachable: {exc}", details={"engine": engine_url})


def engine_message(exc: docker.errors.APIError) -> str:
    """The engine's own words (``explanation``), without the SDK's HTTP preamble."""
    return str(exc.explanation or exc)


@contextmanager
def engine_errors(engine_url: str, action: str) -> Iterator[None]:
    """Map transport failures to ``EngineUnreachableError`` and other API errors to ``EngineError``.

    Call sites catch the specific cases they give meaning to (404 of a container or an image, 409 of a
    name) inside this block; whatever escapes is mapped here.
    """
    try:
        yield
    except _UNREACHABLE as exc:
        raise unreachable(engine_url, exc) from exc
    except docker.errors.APIError as exc:
        raise EngineError(
            f"{action} failed on {engine_url}: {engine_message(exc)}",
            details={"engine": engine_url, "status": exc.status_code},
        ) from exc
    except docker.errors.DockerException as exc:
        # The SDK wraps a failed version handshake this way; anything else is an engine error too.
        if isinstance(exc.__context__, _UNREACHABLE):
            raise unreachable(engine_url, exc) from exc
        raise EngineError(f"{action} failed on {engine_url}: {exc}", details={"engine": engine_url}) from exc


def mapped_stream(engine_url: str, action: str, stream: Iterator[bytes]) -> Iterator[bytes]:
    """``stream`` with failures while reading it mapped too (logs, image exports)."""
    with engine_errors(engine_url, action):
        yield from stream


def image_missing(engine_url: str, ref: str) -> ImageMissingError:
    return ImageMissingError(
        f"image {ref} is not present on engine {engine_url} (deepdock never pulls: build or load it there)",
        details={"image": ref, "engine": engine_url},
    )


def container_missing(engine_url: str, ref: str) -> NotFoundError:
    return NotFoundError(f"container {ref} not found on engine {engine_url}",
                         details={"container": ref, "engine": engine_url})
