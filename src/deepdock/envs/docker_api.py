"""The Docker engine seam: connect (with a clear error when there is none) and run one classic build.

Builds run through ``APIClient.build`` so that every output line reaches the progress callback and a
failure can be attributed to the Dockerfile step (and deepdock step group) that caused it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from deepdock.errors import BuildError, EngineError, EngineUnreachableError
from deepdock.settings import get_settings

# A cold build installs the torch wheel in one silent step; the engine's socket must outlast it.
BUILD_TIMEOUT_S = 1800
BUILD_OUTPUT_TAIL_LINES = 60
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")

Progress = Callable[[str], None]


def connect(timeout_s: int = BUILD_TIMEOUT_S) -> Any:
    """A docker client for ``settings.docker_host`` (or DOCKER_HOST / the default socket)."""
    import docker

    host = get_settings().docker_host
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout_s) if host else docker.from_env(
            timeout=timeout_s)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - every failure here means "no engine answers"
        where = host or "DOCKER_HOST / the default socket"
        raise EngineUnreachableError(f"no Docker engine answers at {where}: {exc}") from None
    return client


def image_exists(client: Any, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot inspect image {ref}: {exc}") from None


def run_build(
    client: Any,
    *,
    tag: str,
    groups: list[str],
    progress: Progress | None = None,
    path: str | None = None,
    fileobj: BinaryIO | None = None,
    labels: dict[str, str] | None = None,
    network_mode: str | None = None,
    nocache: bool = False,
    buildargs: dict[str, str] | None = None,
) -> str:
    """Build and tag; return the image id. ``groups[i]`` names the step group of Dockerfile step i+1.

    The classic builder tags only after the last step succeeds, so a failure leaves no tagged image;
    ``forcerm`` removes the intermediate containers of failed steps too.
    """
    import docker

    say = progress or (lambda _msg: None)
    log: list[str] = []
    step, total, instruction = 0, 0, ""
    image_id: str | None = None
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(
            path=path, fileobj=fileobj, custom_context=fileobj is not None, tag=tag, rm=True, forcerm=True,
            decode=True, labels=labels or None, network_mode=network_mode, nocache=nocache, pull=False,
            buildargs=buildargs or None,
        )
        for chunk in stream:
            if "error" in chunk:
                group = groups[step - 1] if 0 < step <= len(groups) else "metadata"
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                tail = "".join(log[-BUILD_OUTPUT_TAIL_LINES:])
                raise BuildError(
                    f"build failed in step group '{group}' (Dockerfile step {step}/{total}: {instruction})\n"
                    f"{detail.strip()}\n--- build output (tail) ---\n{tail}",
                    step=group, output=tail,
                )
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            text = chunk.get("stream", "")
            if not text:
                continue
            log.append(text)
            match = _STEP_RE.match(text.strip())
            if match:
                step, total, instruction = int(match.group(1)), int(match.group(2)), match.group(3)
                group = groups[step - 1] if step <= len(groups) else "metadata"
                say(f"[{step}/{total}] {group}: {instruction[:100]}")
            elif text.strip() == "---> Using cache":
                say("    cached")
    except docker.errors.APIError as exc:
        raise BuildError(f"the engine rejected the build of {tag}: {exc}", step="engine",
                         output="".join(log[-BUILD_OUTPUT_TAIL_LINES:])) from None
    except (docker.errors.DockerException, ConnectionError, OSError) as exc:
        raise EngineUnreachableError(f"lost the Docker engine while building {tag}: {exc}") from None
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id
