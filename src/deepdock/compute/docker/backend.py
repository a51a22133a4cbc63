"""``ComputeBackend`` on a Docker Engine (or anything speaking its API, e.g. Podman's socket), with every
ability of ``compute.abilities``: stats here, images (``images.py``), files (``files.py``), networks and
published ports (``networks.py``).

Uses the SDK's low-level ``APIClient`` so that every request is explicit. The API version is pinned
(``API_VERSION``) instead of negotiated: negotiation is a request at construction time, and a backend
must be constructible while its engine is down (the server registers nodes that may be offline).
Control calls, archive copies and image transfers each have their own client and timeout
(``connection.py``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import docker.errors
from docker.types import Mount

from deepdock.compute.abilities import GpuTelemetry, StatsSource
from deepdock.compute.base import (
    FINISHED_STATUSES,
    STATUS_RUNNING,
    ComputeBackend,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    GpuInfo,
    GpuStats,
    ImageDetails,
    NodeCapacity,
    check_ports,
)
from deepdock.compute.docker.archive import (
    is_root_user,
    read_single_file,
    rebuild_archive,
    resolve_user,
    volume_roots_archive,
)
from deepdock.compute.docker.connection import (
    API_VERSION,
    ARCHIVE_TIMEOUT_S,
    CONTROL_TIMEOUT_S,
    DEFAULT_UNIX_SOCKET,
    IMAGE_TRANSFER_TIMEOUT_S,
    TlsConfig,
    api_client,
    use_own_ca,
)
from deepdock.compute.docker.errors import (
    container_missing,
    engine_errors,
    engine_message,
    image_missing,
    mapped_stream,
)
from deepdock.compute.docker.files import DockerFileTransfer
from deepdock.compute.docker.gpus import (
    NVIDIA_RUNTIME,
    NVIDIA_SMI_QUERY,
    NVIDIA_SMI_STATS_QUERY,
    PROBE_LABEL,
    PROBE_TIMEOUT_S,
    choose_probe_image,
    gpu_device_request,
    parse_gpu_stats,
    parse_nvidia_smi,
)
from deepdock.compute.docker.images import DockerImageProvision
from deepdock.compute.docker.networks import DockerNetworking, port_bindings, published_ports
from deepdock.compute.docker.volumes import DockerVolumes
from deepdock.errors import ConflictError, EngineError, ImageMissingError, NotFoundError

# Re-exported: where callers have always imported them from.
__all__ = ["API_VERSION", "DEFAULT_UNIX_SOCKET", "DockerBackend", "TlsConfig", "parse_docker_time", "use_own_ca"]

log = logging.getLogger(__name__)

# Capacity needs `docker info` and, on GPU nodes, a probe container: reuse it for this long.
CAPACITY_TTL_S = 30.0
NANO_CPUS_PER_CPU = 1_000_000_000
# Docker's zero time ("0001-01-01T00:00:00Z") means "never happened".
_ZERO_TIME_PREFIX = "0001-01-01"
# Env var the NVIDIA toolkit reads; "void" hides every GPU, even on an engine whose default runtime is
# nvidia and an image (any CUDA image) that sets NVIDIA_VISIBLE_DEVICES=all.
NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
NO_GPUS = "void"
# Tells the job its share of a shared GPU (informational: the engine does not enforce shares).
GPU_SHARE_ENV = "DEEPDOCK_GPU_SHARE"
NETWORK_NONE = "none"
# Who a job runs as when its image's user is root and the engine does not remap user ids: nobody, so
# that no mount can give the job what root owns on the host (docs/security.md). Environment images
# define their own user (uid 1000, envs/dockerfile.py).
JOB_FALLBACK_USER = "65534:65534"


def parse_docker_time(value: str | None) -> float | None:
    """RFC 3339 with up to nanoseconds (docker's format) -> epoch seconds; zero time -> None."""
    if not value or value.startswith(_ZERO_TIME_PREFIX):
        return None
    text = value.rstrip("Z")
    offset = 0.0
    if "+" in text[10:] or "-" in text[10:]:
        # Engines normally report UTC ("Z"); keep any explicit offset correct anyway.
        sign_at = max(text.rfind("+"), text.rfind("-"))
        hours, _, minutes = text[sign_at + 1 :].partition(":")
        offset = (int(hours) * 3600 + int(minutes or 0) * 60) * (1 if text[sign_at] == "+" else -1)
        text = text[:sign_at]
    whole, _, fraction = text.partition(".")
    base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{fraction}") if fraction else 0.0) - offset


class DockerBackend(ComputeBackend, StatsSource, GpuTelemetry, DockerImageProvision, DockerFileTransfer, DockerNetworking,
                    DockerVolumes):
    def __init__(
        self,
        engine_url: str = "",
        tls: TlsConfig | None = None,
        timeout_s: float = CONTROL_TIMEOUT_S,
        probe_image: str | None = None,
        capacity_ttl_s: float = CAPACITY_TTL_S,
        archive_timeout_s: float = ARCHIVE_TIMEOUT_S,
        image_timeout_s: float = IMAGE_TRANSFER_TIMEOUT_S,
    ) -> None:
        """``timeout_s`` bounds each control call; archive copies and image transfers have their own."""
        self.engine_url = engine_url or os.environ.get("DOCKER_HOST", "") or DEFAULT_UNIX_SOCKET
        self.tls = tls
        self.timeout_s = timeout_s
        self.archive_timeout_s = archive_timeout_s
        self.image_timeout_s = image_timeout_s
        self.probe_image = probe_image
        self.capacity_ttl_s = capacity_ttl_s
        # No request is made here (the API version is pinned): a backend exists while its engine is down.
        self._api = api_client(self.engine_url, tls, timeout_s)
        self._archive_api = api_client(self.engine_url, tls, archive_timeout_s)
        self._image_api = api_client(self.engine_url, tls, image_timeout_s)
        self._capacity_lock = threading.Lock()
        self._capacity: tuple[float, NodeCapacity] | None = None
        self._remaps_users: bool | None = None

    # ------------------------------------------------------------------ ComputeBackend

    def ping(self) -> None:
        with engine_errors(self.engine_url, "ping"):
            self._api.ping()

    def capacity(self) -> NodeCapacity:
        # One probe at a time: concurrent callers during a probe wait for its result.
        with self._capacity_lock:
            now = time.monotonic()
            if self._capacity is not None and now - self._capacity[0] < self.capacity_ttl_s:
                return _copy_capacity(self._capacity[1])
            with engine_errors(self.engine_url, "docker info"):
                info = self._api.info()
            labels = dict(item.partition("=")[::2] for item in info.get("Labels") or [])
            capacity = NodeCapacity(
                cpus=float(info["NCPU"]),
                memory=int(info["MemTotal"]),
                gpus=self._discover_gpus(info),
                engine_version=str(info.get("ServerVersion", "")),
                os=str(info.get("OSType", "")),
                arch=str(info.get("Architecture", "")),
                labels=labels,
            )
            self._capacity = (now, capacity)
            return _copy_capacity(capacity)

    def run(self, spec: ContainerSpec) -> str:
        check_ports(spec, self.engine_url)
        image = self._inspect_image(spec.image)
        image_user = str((image.get("Config") or {}).get("User") or "")
        user = spec.user if spec.user is not None else self._job_user(image_user)
        env = dict(spec.env)
        if is_root_user(image_user) and spec.user is None:
            # The fallback user has no home in the image: give it the workdir, which it owns.
            env.setdefault("HOME", spec.workdir)
        if spec.gpu_indices:
            env[NVIDIA_VISIBLE_DEVICES] = ",".join(str(i) for i in spec.gpu_indices)
            if spec.gpu_share < 1.0:
                env[GPU_SHARE_ENV] = f"{spec.gpu_share:g}"
        else:
            env[NVIDIA_VISIBLE_DEVICES] = NO_GPUS
        container_id = self._create(spec, user, env)
        try:
            uid, gid = self._numeric_user(container_id, user)
            if uid == 0 and spec.user is None and not self.remaps_users():
                # The image's user is root under another name: never run a job as the host's root.
                self._remove_quietly(container_id)
                user = JOB_FALLBACK_USER
                env.setdefault("HOME", spec.workdir)
                container_id = self._create(spec, user, env)
                uid, gid = self._numeric_user(container_id, user)
            self._put_code(container_id, spec, uid, gid)
            self._own_volumes(container_id, spec, uid, gid)
            with engine_errors(self.engine_url, f"start container {spec.name}"):
                self._api.start(container_id)
        except BaseException:
            # Never leave a created-but-not-started container behind: the name would stay taken.
            self._remove_quietly(container_id)
            raise
        return container_id

    def _job_user(self, image_user: str) -> str:
        """The image's user when it is not root; otherwise root only where the engine remaps user ids
        (then the container's root is an unprivileged id on the host), else ``JOB_FALLBACK_USER``."""
        if not is_root_user(image_user):
            return image_user
        return "" if self.remaps_users() else JOB_FALLBACK_USER

    def remaps_users(self) -> bool:
        """Whether the engine runs with user-namespace remapping (``dockerd --userns-remap``)."""
        if self._remaps_users is None:
            with engine_errors(self.engine_url, "read engine info"):
                options = self._api.info().get("SecurityOptions") or []
            self._remaps_users = any("name=userns" in str(o) for o in options)
        return self._remaps_users

    def _create(self, spec: ContainerSpec, user: str, env: dict[str, str]) -> str:
        with engine_errors(self.engine_url, f"create container {spec.name}"):
            host_config = self._api.create_host_config(
                nano_cpus=round(spec.cpus * NANO_CPUS_PER_CPU),
                mem_limit=spec.memory,
                # Equal to the memory limit: no swap on top of it, so exceeding it is an OOM kill.
                memswap_limit=spec.memory,
                pids_limit=spec.pids_limit,
                shm_size=spec.shm_size,
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                # tini as PID 1 forwards SIGTERM to the job and reaps zombies.
                init=True,
                network_mode=spec.network or NETWORK_NONE,
                mounts=[
                    Mount(
                        target=v.target,
                        source=v.source,
                        type="bind" if v.is_bind else "volume",
                        read_only=v.read_only,
                    )
                    for v in spec.volumes
                ],
                device_requests=[gpu_device_request(spec.gpu_indices)] if spec.gpu_indices else None,
                port_bindings=port_bindings(spec.ports) if spec.ports else None,
            )
            try:
                created = self._api.create_container(
                    image=spec.image,
                    command=spec.command,
                    name=spec.name,
                    environment=env,
                    labels=dict(spec.labels),
                    working_dir=spec.workdir,
                    user=user or None,
                    hostname=spec.hostname,
                    ports=list(spec.ports) or None,
                    host_config=host_config,
                )
            except docker.errors.ImageNotFound as exc:
                raise image_missing(self.engine_url, spec.image) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise ConflictError(
                        f"container name {spec.name!r} is already in use on {self.engine_url}",
                        details={"engine": self.engine_url},
                    ) from exc
                raise
        return str(created["Id"])

    def inspect(self, container_id: str) -> ContainerState:
        with engine_errors(self.engine_url, f"inspect container {container_id}"):
            try:
                data = self._api.inspect_container(container_id)
            except docker.errors.NotFound as exc:
                raise container_missing(self.engine_url, container_id) from exc
        return _state_from_inspect(data)

    def list_containers(self, labels: dict[str, str]) -> list[ContainerState]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with engine_errors(self.engine_url, "list containers"):
            summaries = self._api.containers(all=True, filters=filters)
        states = []
        for summary in summaries:
            try:
                states.append(self.inspect(summary["Id"]))
            except NotFoundError:
                continue  # removed between the listing and the inspect
        return sorted(states, key=lambda s: (s.created_at or 0.0, s.id))

    def logs(
        self,
        container_id: str,
        since: float | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        with engine_errors(self.engine_url, f"logs of container {container_id}"):
            try:
                stream = self._api.logs(
                    container_id,
                    stdout=True,
                    stderr=True,
                    stream=True,
                    follow=follow,
                    timestamps=timestamps,
                    since=since if since is not None and since > 0 else None,
                )
            except docker.errors.NotFound as exc:
                raise container_missing(self.engine_url, container_id) from exc
        return mapped_stream(self.engine_url, f"logs of container {container_id}", stream)

    def stop(self, container_id: str, grace_s: float) -> None:
        # Docker takes whole seconds; round up so the job never gets less grace than asked for.
        with engine_errors(self.engine_url, f"stop container {container_id}"):
            try:
                self._api.stop(container_id, timeout=max(0, math.ceil(grace_s)))
            except docker.errors.NotFound as exc:
                raise container_missing(self.engine_url, container_id) from exc

    def remove(self, container_id: str) -> None:
        with engine_errors(self.engine_url, f"remove container {container_id}"):
            try:
                self._api.remove_container(container_id, force=True, v=False)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                # A removal already under way (e.g. a concurrent remove) is the outcome we want.
                if exc.status_code == 409 and "already in progress" in engine_message(exc):
                    return
                raise

    def image_exists(self, ref: str) -> bool:
        try:
            self._inspect_image(ref)
        except ImageMissingError:
            return False
        return True

    def image_details(self, ref: str) -> ImageDetails:
        data = self._inspect_image(ref)
        return ImageDetails(id=str(data.get("Id", "")), labels=dict((data.get("Config") or {}).get("Labels") or {}))

    def close(self) -> None:
        for api in (self._api, self._archive_api, self._image_api):
            api.close()

    # ------------------------------------------------------------------ StatsSource

    def stats(self, container_id: str) -> ContainerStats:
        with engine_errors(self.engine_url, f"stats of container {container_id}"):
            try:
                data = self._api.stats(container_id, stream=False)
            except docker.errors.NotFound as exc:
                raise container_missing(self.engine_url, container_id) from exc
        return _stats_from_sample(data)

    # ------------------------------------------------------------------ internals

    def _inspect_image(self, ref: str) -> dict[str, Any]:
        with engine_errors(self.engine_url, f"inspect image {ref}"):
            try:
                return dict(self._api.inspect_image(ref))
            except docker.errors.NotFound as exc:
                raise image_missing(self.engine_url, ref) from exc

    def _numeric_user(self, container_id: str, user: str) -> tuple[int, int]:
        """(uid, gid) of ``user`` as the engine will resolve it, from the image's passwd and group."""
        if user in ("", "root", "0"):
            return 0, 0
        passwd = self._read_file(container_id, "/etc/passwd")
        group = self._read_file(container_id, "/etc/group")
        return resolve_user(user, passwd, group)

    def _put_code(self, container_id: str, spec: ContainerSpec, uid: int, gid: int) -> None:
        """Create ``workdir`` owned by the container user and extract the code archive into it."""
        parent, data = rebuild_archive(spec.code_archive, spec.workdir, uid, gid)
        with engine_errors(self.engine_url, f"copy code into container {spec.name}"):
            self._archive_api.put_archive(container_id, parent, data)

    def _own_volumes(self, container_id: str, spec: ContainerSpec, uid: int, gid: int) -> None:
        """Give the job's user the root folder of each writable named volume (Kubernetes' fsGroup, in
        effect): a new volume belongs to root, and the job does not run as root. Never a bind mount:
        that folder is the host's, and its owner is the admin's choice."""
        owned = [v for v in spec.volumes if not v.is_bind and not v.read_only]
        if not owned or uid == 0:
            return
        with engine_errors(self.engine_url, f"prepare volumes of container {spec.name}"):
            self._archive_api.put_archive(container_id, "/", volume_roots_archive([v.target for v in owned], uid, gid))

    def _read_file(self, container_id: str, path: str) -> str:
        """A small file of the container's image, or "" if it has none."""
        with engine_errors(self.engine_url, f"read {path} of container {container_id}"):
            try:
                stream, _ = self._archive_api.get_archive(container_id, path)
            except docker.errors.NotFound:
                return ""
            return read_single_file(b"".join(stream))

    def _remove_quietly(self, container_id: str) -> None:
        try:
            self.remove(container_id)
        except Exception:  # noqa: BLE001 - cleanup after a failure must not hide that failure
            log.warning("could not remove container %s on %s", container_id, self.engine_url, exc_info=True)

    def _discover_gpus(self, info: dict[str, Any]) -> list[GpuInfo]:
        if NVIDIA_RUNTIME not in (info.get("Runtimes") or {}):
            return []
        image = self._probe_image_to_use()
        if image is None:
            log.warning(
                "engine %s has the nvidia runtime but no glibc image to probe GPUs with (set a probe image); reporting 0 GPUs",
                self.engine_url,
            )
            return []
        try:
            return parse_nvidia_smi(self._run_probe(image, NVIDIA_SMI_QUERY))
        except (EngineError, ValueError) as exc:
            log.warning("GPU probe on %s with image %s failed: %s; reporting 0 GPUs", self.engine_url, image, exc)
            return []

    def _probe_image_to_use(self) -> str | None:
        if self.probe_image is not None:
            return self.probe_image
        with engine_errors(self.engine_url, "list images"):
            tags = [t for img in self._api.images() for t in (img.get("RepoTags") or [])]
        return choose_probe_image(tags)

    # ------------------------------------------------------------------ GpuTelemetry

    def gpu_stats(self) -> list[GpuStats]:
        # Capacity (cached) says whether there are GPUs at all: a GPU-less node never starts a probe.
        if not self.capacity().gpus:
            return []
        image = self._probe_image_to_use()
        if image is None:
            raise EngineError(f"engine {self.engine_url} has no glibc image to run nvidia-smi in (set a probe image)")
        try:
            return parse_gpu_stats(self._run_probe(image, NVIDIA_SMI_STATS_QUERY))
        except ValueError as exc:
            raise EngineError(f"GPU stats on {self.engine_url}: {exc}") from None

    def _run_probe(self, image: str, query: list[str]) -> str:
        """Run the nvidia-smi ``query`` in a throwaway container with every GPU; return its stdout."""
        with engine_errors(self.engine_url, "GPU probe"):
            host_config = self._api.create_host_config(
                network_mode=NETWORK_NONE,
                device_requests=[gpu_device_request(None, with_utility=True)],
            )
            created = self._api.create_container(
                image=image,
                # As the entrypoint, so an image's own entrypoint (a shell wrapper, python) is bypassed.
                entrypoint=query[:1],
                command=query[1:],
                labels={PROBE_LABEL: "true"},
                host_config=host_config,
            )
            container_id = created["Id"]
            try:
                self._api.start(container_id)
                result = self._api.wait(container_id, timeout=PROBE_TIMEOUT_S)
                output = self._api.logs(container_id, stdout=True, stderr=False).decode(errors="replace")
                if result.get("StatusCode") != 0:
                    raise EngineError(f"nvidia-smi exited with {result.get('StatusCode')}: {output[-500:]}")
                return output
            finally:
                self._remove_quietly(container_id)


def _copy_capacity(capacity: NodeCapacity) -> NodeCapacity:
    """A copy callers may change without touching the cache."""
    return replace(capacity, gpus=list(capacity.gpus), labels=dict(capacity.labels))


def _state_from_inspect(data: dict[str, Any]) -> ContainerState:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    status = str(state.get("Status", ""))
    finished = status in FINISHED_STATUSES
    started_at = parse_docker_time(state.get("StartedAt"))
    finished_at = parse_docker_time(state.get("FinishedAt")) if finished else None
    if started_at is not None and finished_at is not None and finished_at < started_at:
        # Docker stamps StartedAt when its start call returns; a process that exits at once can be
        # stamped finished a few milliseconds earlier. Runtimes must never come out negative.
        finished_at = started_at
    return ContainerState(
        id=str(data["Id"]),
        name=str(data.get("Name", "")).lstrip("/"),
        status=status,
        # Docker reports 0 while running; only a finished container has an exit code.
        exit_code=int(state.get("ExitCode", 0)) if finished else None,
        oom_killed=bool(state.get("OOMKilled", False)),
        started_at=started_at,
        finished_at=finished_at,
        labels=dict(config.get("Labels") or {}),
        error=str(state.get("Error", "")),
        image=str(config.get("Image", "")),
        created_at=parse_docker_time(data.get("Created")),
        # Only a running container holds its host ports; Docker may list stale bindings otherwise.
        ports=published_ports(data) if status == STATUS_RUNNING else {},
    )


def _stats_from_sample(data: dict[str, Any]) -> ContainerStats:
    cpu = data.get("cpu_stats") or {}
    pre = data.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0)) - (pre.get("cpu_usage", {}).get("total_usage", 0))
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    cpu_percent = cpu_delta / system_delta * online * 100.0 if system_delta > 0 and cpu_delta > 0 else 0.0
    memory = data.get("memory_stats") or {}
    mem_detail = memory.get("stats") or {}
    # Page cache is reclaimable, so it is not "used" (cgroup v1: cache, v2: inactive_file), as docker stats.
    cache = mem_detail.get("total_inactive_file", mem_detail.get("inactive_file", mem_detail.get("cache", 0)))
    return ContainerStats(
        cpu_percent=cpu_percent,
        memory_usage=max(0, int(memory.get("usage", 0)) - int(cache)),
        memory_limit=int(memory.get("limit", 0)),
        pids=int((data.get("pids_stats") or {}).get("current", 0)),
    )
