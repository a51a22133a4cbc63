"""``ImageProvision`` on a Docker engine: build environments here, move images by save → load.

There is no registry between nodes, so an image reaches another engine as a ``docker save`` stream
read from one engine and written into the other's ``docker load`` through this process, chunk by
chunk (never the whole image in memory). Every call here uses the image-transfer client, whose
timeout (``IMAGE_TRANSFER_TIMEOUT_S``) never lengthens the backend's control calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import docker
import docker.errors

from deepdock.compute.abilities import ImageProvision, Progress
from deepdock.compute.docker.connection import TlsConfig, is_local_engine, sdk_client
from deepdock.compute.docker.errors import engine_errors, image_missing, mapped_stream
from deepdock.errors import EngineError, UnsupportedError
from deepdock.specs.env import EnvSpec

# Size of the chunks an export is read in: large enough for few syscalls, small enough to stream.
EXPORT_CHUNK_BYTES = 2 * 1024**2


class DockerImageProvision(ImageProvision):
    """Mixed into ``DockerBackend``, which sets these attributes."""

    engine_url: str
    tls: TlsConfig | None
    image_timeout_s: float
    _image_api: docker.APIClient

    @property
    def builds_environments(self) -> bool:
        return is_local_engine(self.engine_url)

    def build_environment(self, env: EnvSpec, progress: Progress | None = None) -> str:
        if not self.builds_environments:
            raise UnsupportedError(
                f"engine {self.engine_url} is not on this host and cannot build environments "
                "(builds reach the wheel server on loopback); build on a local engine and copy the image",
                details={"engine": self.engine_url},
            )
        from deepdock.envs import build_env  # heavy (lock store, Dockerfile rendering): only when building

        client: Any = sdk_client(self.engine_url, self.tls, self.image_timeout_s)
        try:
            # envs raises BuildError / EngineError itself; SDK errors that escape it are mapped here.
            with engine_errors(self.engine_url, f"build environment {env.name or ''}".strip()):
                return str(build_env(env, docker_client=client, offline=True, progress=progress).tag)
        finally:
            client.close()

    def build_model_server(self, bundle: Path, runtime: str, progress: Progress | None = None) -> str:
        if not self.builds_environments:
            raise UnsupportedError(f"engine {self.engine_url} is not on this host and cannot build serving images",
                                   details={"engine": self.engine_url})
        from deepdock.envs.serving_image import build_serving_image

        client: Any = sdk_client(self.engine_url, self.tls, self.image_timeout_s)
        try:
            with engine_errors(self.engine_url, f"build the serving image of {bundle.name}"):
                return build_serving_image(client, bundle, runtime, progress=progress).tag
        finally:
            client.close()

    def export_image(self, ref: str) -> Iterator[bytes]:
        action = f"export image {ref}"
        with engine_errors(self.engine_url, action):
            # Saving by the name (not the id) keeps exactly this tag in the archive, as
            # ``images.get(tag).save(named=tag)`` does. The timeout bounds the wait for the answer; the
            # SDK lifts the socket's read timeout once a raw stream has begun.
            stream = self._image_api.get_image(ref, chunk_size=EXPORT_CHUNK_BYTES)
            try:
                # The SDK checks the HTTP status only when the first chunk is read: read it now, so a
                # missing image fails at this call and not inside the target's load.
                first = next(stream, b"")
            except docker.errors.NotFound as exc:
                raise image_missing(self.engine_url, ref) from exc
        return mapped_stream(self.engine_url, action, chain([first], stream))

    def import_image(self, data: Iterable[bytes]) -> None:
        # A generator is sent as a chunked body (streamed); requests would take a list for form fields.
        body: bytes | Iterator[bytes] = bytes(data) if isinstance(data, (bytes, bytearray)) else iter(data)
        action = "load image"
        with engine_errors(self.engine_url, action):
            for message in self._image_api.load_image(body):
                # The engine reports a bad archive inside the progress stream, with HTTP 200.
                if isinstance(message, dict) and message.get("error"):
                    raise EngineError(f"{action} failed on {self.engine_url}: {message['error']}",
                                      details={"engine": self.engine_url})
