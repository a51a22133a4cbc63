"""A model version's serving image, in three content-addressed layers, built offline like every deepdock image.

1. **runtime**: an environment (``envs.build``) with the model's runtime and the server's few libraries:
   onnxruntime for ONNX (no torch: a light image), or torch for TorchScript; numpy, orjson,
   prometheus-client and uvicorn (httptools) for both. Shared by every model of that runtime.
2. **server**: ``deepdock.serving``'s own files under ``/opt/deepdock-serving``, run as
   ``python -m deepdock.serving`` by the unprivileged user, port 8080. Tagged by the runtime's tag and
   the files' hash, so it changes only with deepdock's serving code.
3. **model**: the bundle (model file + ``deepdock-model.json``) at ``/model``, tagged by the server tag
   and the bundle's content: a new version rebuilds only this layer.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdock.envs import docker_api
from deepdock.envs.build import build_env, code_tree_hash
from deepdock.envs.dockerfile import STEP_MARKER, USER_UID, step_groups
from deepdock.specs.env import EnvSpec

Progress = Callable[[str], None]
SERVER_REPO = "deepdock/serving-server"
SERVE_REPO = "deepdock/serve"
TAG_HASH_CHARS = 24
SERVER_DIR = "/opt/deepdock-serving"
MODEL_DIR = "/model"
SERVING_PORT = 8080
# The server's libraries, pinned to the versions its tests run with. uvloop is left out: 14 MB of the
# ONNX image's ~300 MB budget, for an event loop the model's batches, not the loop, dominate.
SERVER_PIP = ["numpy==2.4.6", "orjson==3.13.0", "prometheus-client==0.26.0", "uvicorn==0.55.0",
              "httptools==0.9.0"]
ONNX_PIP = ["onnxruntime==1.30.0"]
DEFAULT_TORCH = "2.13.0"
_SERVING_SOURCE = Path(__file__).resolve().parents[1] / "serving"
_PACKAGE_INIT = b'"""deepdock, as a serving image holds it: only deepdock.serving."""\n\n__version__ = "%s"\n'


@dataclass(frozen=True)
class ServingImage:
    tag: str
    runtime_tag: str
    server_tag: str
    image_id: str
    size: int
    cached: bool


class NotServable(ValueError):
    """The version cannot be served as asked (no export of that format, no signature); says what to run."""


def choose_runtime(ref: str, formats: dict[str, Any], signature: dict[str, Any] | None,
                   requested: str | None) -> tuple[str, str]:
    """The runtime to serve ``ref`` with and its exported file: ``requested``, else ONNX when exported
    (the light image), else TorchScript."""
    if requested is not None and requested not in ("onnx", "torchscript"):
        raise NotServable(f"unknown runtime {requested!r}; one of onnx, torchscript")
    if not signature or not signature.get("inputs"):
        raise NotServable(f"{ref} has no signature: register it with an example input (--example-input) so a "
                          "server can check requests")
    order = [requested] if requested else ["onnx", "torchscript"]
    for runtime in order:
        entry = formats.get(runtime)
        if isinstance(entry, dict) and entry.get("file"):
            return runtime, str(entry["file"])
    wanted = requested or "onnx"
    raise NotServable(f"{ref} has no {'exported format' if requested is None else requested + ' export'}; "
                      f"run `deepdock model export {ref} --format {wanted}` first")


def runtime_env(runtime: str, *, torch_version: str | None = None, python: str = "3.11") -> EnvSpec:
    if runtime == "onnx":
        return EnvSpec(name="serving-onnx", python=python, accelerator="cpu", pip=[*ONNX_PIP, *SERVER_PIP])
    if runtime == "torchscript":
        return EnvSpec(name="serving-torchscript", python=python, accelerator="cpu",
                       framework={"name": "torch", "version": torch_version or DEFAULT_TORCH},  # type: ignore[arg-type]
                       pip=list(SERVER_PIP))
    raise ValueError(f"unknown runtime {runtime!r}; one of torchscript, onnx")


def _server_files() -> dict[str, bytes]:
    from deepdock import __version__

    files = {"deepdock/__init__.py": _PACKAGE_INIT % __version__.encode()}
    for path in sorted(_SERVING_SOURCE.glob("*.py")):
        files[f"deepdock/serving/{path.name}"] = path.read_bytes()
    return files


def _context(dockerfile: str, folder: str, files: dict[str, bytes]) -> io.BytesIO:
    """A deterministic tar: the Dockerfile and ``files`` under ``folder``, owned by the image's user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = {"Dockerfile": dockerfile.encode(), **{f"{folder}/{name}": data for name, data in files.items()}}
        dirs = sorted({str(p) for name in entries for p in Path(name).parents if str(p) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _build(client: Any, tag: str, dockerfile: str, folder: str, files: dict[str, bytes], say: Progress,
           labels: dict[str, str] | None) -> bool:
    """Build ``tag`` unless it exists; True when it was there already."""
    if docker_api.image_exists(client, tag):
        say(f"serving: {tag} exists")
        return True
    say(f"serving: building {tag}")
    docker_api.run_build(client, tag=tag, groups=step_groups(dockerfile), progress=say,
                         fileobj=_context(dockerfile, folder, files), labels=labels)
    return False


def build_serving_image(client: Any, bundle: Path, runtime: str, *, torch_version: str | None = None,
                        progress: Progress | None = None, labels: dict[str, str] | None = None) -> ServingImage:
    """The serving image of the bundle in ``bundle`` (a folder with ``deepdock-model.json``)."""
    say = progress or (lambda _msg: None)
    runtime_tag = build_env(runtime_env(runtime, torch_version=torch_version), docker_client=client, offline=True,
                            progress=say, labels=labels).tag
    server_files = _server_files()
    digest = hashlib.sha256(runtime_tag.encode())
    for name, data in server_files.items():
        digest.update(f"\0{name}\0".encode() + hashlib.sha256(data).digest())
    server_tag = f"{SERVER_REPO}:{digest.hexdigest()[:TAG_HASH_CHARS]}"
    server_dockerfile = (
        "# Generated by deepdock: the model server on top of its runtime.\n"
        f"{STEP_MARKER}server\n"
        f"FROM {runtime_tag}\n"
        f"COPY --chown={USER_UID}:{USER_UID} server {SERVER_DIR}\n"
        f"ENV PYTHONPATH={SERVER_DIR} DEEPDOCK_SERVING_MODEL_DIR={MODEL_DIR} PYTHONDONTWRITEBYTECODE=1\n"
        f"EXPOSE {SERVING_PORT}\n"
        f"USER {USER_UID}\n"
        f'CMD ["python", "-m", "deepdock.serving", "--port", "{SERVING_PORT}"]\n'
    )
    server_cached = _build(client, server_tag, server_dockerfile, "server", server_files, say, labels)
    model_files = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}
    model_hash = hashlib.sha256(f"{server_tag}\n{code_tree_hash(bundle)}".encode()).hexdigest()
    tag = f"{SERVE_REPO}:{model_hash[:TAG_HASH_CHARS]}"
    model_dockerfile = (
        "# Generated by deepdock: a model version's files on top of its server.\n"
        f"{STEP_MARKER}model\n"
        f"FROM {server_tag}\n"
        f"COPY --chown={USER_UID}:{USER_UID} model {MODEL_DIR}\n"
        f"LABEL deepdock.serving.runtime={runtime} deepdock.serving.model-hash={model_hash}\n"
    )
    model_cached = _build(client, tag, model_dockerfile, "model", model_files, say, labels)
    image = client.images.get(tag)
    return ServingImage(tag=tag, runtime_tag=runtime_tag, server_tag=server_tag, image_id=image.id,
                        size=int(image.attrs.get("Size", 0)), cached=server_cached and model_cached)
