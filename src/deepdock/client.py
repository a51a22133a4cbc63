"""Typed Python client of deepdock's REST API (the CLI is a thin layer over it).

Every method returns the wire models of ``deepdock.api`` (``JobOut``, ``JobDetail``, ``NodeOut``...), the
same classes the server answers with. Errors come back as the same ``deepdock.errors`` classes the server
raised, so callers catch ``UnschedulableError`` or ``SpecError`` rather than parsing HTTP bodies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from deepdock.api.enums import JobStatus, NodeStatus
from deepdock.api.models import (
    AliasEventOut,
    AliasIn,
    ApplyServiceIn,
    ArtifactOut,
    CheckpointOut,
    CodeOut,
    ExportIn,
    ExportOut,
    GpuSeriesOut,
    HostNetworkIn,
    HostPathIn,
    HostPathOut,
    JobDetail,
    JobOut,
    JobStatusOut,
    MemberIn,
    MetricsOut,
    ModelDetail,
    ModelOut,
    ModelVersionOut,
    NodeIn,
    NodeOut,
    NodeUsageSampleOut,
    ParamsOut,
    ProjectOut,
    QuotaIn,
    RegisterModelIn,
    RunSummary,
    ScaleServiceIn,
    SeriesOut,
    ServiceDetail,
    ServiceOut,
    ServiceSampleOut,
    SubmitJob,
    TokenOut,
    UpdateServiceIn,
    UsageSampleOut,
    UserIn,
    UserOut,
    VolumesOut,
)
from deepdock.codepack import package_code  # also importable from here, as before
from deepdock.config import read_config
from deepdock.errors import DeepdockError, EngineUnreachableError, NotFoundError, error_from_wire
from deepdock.settings import Settings, get_settings
from deepdock.specs.job import JobSpec
from deepdock.specs.service import ServiceSpec

API = "/api/v1"
REQUEST_TIMEOUT_S = 30.0
# The most jobs one GET /jobs answers with (the server's cap); ``iter_jobs`` pages in steps of this.
JOB_PAGE_SIZE = 1000


M = TypeVar("M", bound=BaseModel)


class ServerUnreachableError(EngineUnreachableError):
    code = "server_unreachable"


class UnexpectedResponseError(DeepdockError):
    """The server answered, but not with the body this client expects."""

    status_code = 502
    code = "unexpected_response"


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *, settings: Settings | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        settings = settings or get_settings()
        config = read_config(settings)
        self.url = url or settings.server_url or config.get("url") or settings.url
        self.token = token or settings.token or config.get("token", "")
        self._http = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S, transport=transport,
                                  headers={"Authorization": f"Bearer {self.token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"deepdock server at {self.url} did not answer ({exc}); "
                                         "start it with `deepdock server`") from None
        _raise_for_error(response)
        return response

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """One request; its JSON body as ``model``."""
        response = self._request(method, path, **kwargs)
        try:
            return model.model_validate(response.json())
        except (ValidationError, ValueError) as exc:
            raise self._unreadable(method, path, exc) from None

    def _get_list(self, adapter: TypeAdapter[list[M]], path: str, **kwargs: Any) -> list[M]:
        """One GET; its JSON body as a list of models."""
        response = self._request("GET", path, **kwargs)
        try:
            return adapter.validate_python(response.json())
        except (ValidationError, ValueError) as exc:
            raise self._unreadable("GET", path, exc) from None

    def _unreadable(self, method: str, path: str, exc: ValueError) -> UnexpectedResponseError:
        # A body that does not parse is most often a server newer than this client (a status it does
        # not know yet): one clear error, not a traceback.
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = f": {'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else f": {exc}"
        return UnexpectedResponseError(f"the server at {self.url} answered {method} {API}{path} with a body this "
                                       f"client cannot read{where} (is the client older than the server?)")

    # -- jobs --------------------------------------------------------------------------------------------
    def upload_code(self, root: Path, *, warn: Callable[[str], None] | None = None) -> CodeOut:
        """Package ``root`` (see ``deepdock.codepack``) and upload it; the answer names it by its sha256.

        A folder that does not exist is a ``SpecError`` before anything is sent. Secrets left out of the
        package are named to ``warn`` (default: ``warnings.warn``)."""
        package = package_code(root)
        message = package.warning()
        if message:
            (warn or _warn)(message)
        return self._call(CodeOut, "POST", "/code", content=package.data,
                          headers={"Content-Type": "application/gzip"})

    def submit(self, spec: JobSpec, code_sha256: str | None = None) -> JobOut:
        body = SubmitJob(spec=spec, code_sha256=code_sha256)
        return self._call(JobOut, "POST", "/jobs", json=body.model_dump(mode="json"))

    def run(self, spec: JobSpec, *, warn: Callable[[str], None] | None = None) -> JobOut:
        """Upload the spec's code folder (if any; see ``upload_code``) and submit."""
        sha = self.upload_code(Path(spec.code), warn=warn).sha256 if spec.code else None
        return self.submit(spec, sha)

    def jobs(self, *, status: Sequence[JobStatus | str] | None = None, project: str | None = None,
             name: str | None = None, limit: int = 100, before: float | None = None,
             user: str | None = None) -> list[JobOut]:
        """One page, newest first: at most ``limit`` jobs (the server caps it at ``JOB_PAGE_SIZE``),
        submitted strictly before ``before`` when given. ``iter_jobs`` reads them all."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = [str(s) for s in status]
        if project:
            params["project"] = project
        if name:
            params["name"] = name
        if user:
            params["user"] = user
        if before is not None:
            params["before"] = repr(before)
        return self._get_list(_JOBS, "/jobs", params=params)

    def iter_jobs(self, *, status: Sequence[JobStatus | str] | None = None, project: str | None = None,
                  name: str | None = None, before: float | None = None,
                  page_size: int | None = None, user: str | None = None) -> Iterator[JobOut]:
        """Every matching job, newest first, one page (``page_size``, default ``JOB_PAGE_SIZE``) per request.

        Pages follow the ``before`` cursor (a submission time). The next page starts just after the last
        one's oldest time rather than strictly before it, so jobs submitted in the same instant as that one
        are not lost at a page boundary; the ones already given are dropped by id. Only more than a page of
        jobs sharing one instant could still skip some (the cursor then moves strictly past it)."""
        size = page_size or JOB_PAGE_SIZE
        seen: set[str] = set()
        cursor = before
        while True:
            page = self.jobs(status=status, project=project, name=name, limit=size, before=cursor, user=user)
            for job in page:
                if job.id not in seen:
                    seen.add(job.id)
                    yield job
            if len(page) < size:
                return
            oldest = page[-1].submitted_at
            after_oldest = math.nextafter(oldest, math.inf)
            # A full page all from one instant: moving on strictly is the only way forward.
            cursor = oldest if after_oldest == cursor else after_oldest

    def job(self, ref: str) -> JobDetail:
        """Everything about one job, by id or name."""
        return self._call(JobDetail, "GET", f"/jobs/{ref}")

    def status(self, ref: str) -> JobStatusOut:
        """The cheap read to poll."""
        return self._call(JobStatusOut, "GET", f"/jobs/{ref}/status")

    def stop(self, ref: str) -> JobOut:
        return self._call(JobOut, "POST", f"/jobs/{ref}/stop")

    def logs(self, ref: str, *, follow: bool = False, attempt: int | None = None, rank: int = 0) -> Iterator[bytes]:
        params: dict[str, Any] = {"follow": follow, "rank": rank}
        if attempt is not None:
            params["attempt"] = attempt
        yield from self._stream(f"/jobs/{ref}/logs", params)

    def _stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[bytes]:
        try:
            with self._http.stream("GET", f"{API}{path}", params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_error(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"deepdock server at {self.url} did not answer ({exc})") from None

    # -- tracking ----------------------------------------------------------------------------------------
    def metrics(self, ref: str) -> MetricsOut:
        """Every series of a job with its final value."""
        return self._call(MetricsOut, "GET", f"/jobs/{ref}/metrics")

    def series(self, ref: str, name: str, *, max_points: int | None = None, attempt: int | None = None,
               rank: int | None = None, after_step: int | None = None) -> SeriesOut:
        """One series, all of it or LTTB-downsampled to ``max_points``; ``after_step`` for what is new."""
        params = {k: v for k, v in {"max_points": max_points, "attempt": attempt, "rank": rank,
                                    "after_step": after_step}.items() if v is not None}
        path = f"/jobs/{ref}/metrics/{name}"
        response = self._request("GET", path, params=params)
        try:
            # orjson: a 100,000-point series parses in a few ms (the stdlib's json took ~75 ms).
            return SeriesOut.model_validate(orjson.loads(response.content))
        except (ValidationError, ValueError) as exc:
            raise self._unreadable("GET", path, exc) from None

    def params(self, ref: str) -> ParamsOut:
        return self._call(ParamsOut, "GET", f"/jobs/{ref}/params")

    def compare(self, refs: Sequence[str]) -> list[RunSummary]:
        return self._get_list(_RUNS, "/compare", params={"job": list(refs)})

    def checkpoints(self, ref: str) -> list[CheckpointOut]:
        return self._get_list(_CHECKPOINTS, f"/jobs/{ref}/checkpoints")

    def artifacts(self, ref: str) -> list[ArtifactOut]:
        return self._get_list(_ARTIFACTS, f"/jobs/{ref}/artifacts")

    def artifact(self, ref: str, path: str) -> Iterator[bytes]:
        """A job's file, streamed (``path`` as ``artifacts`` lists it, or relative to the last attempt's rank 0)."""
        yield from self._stream(f"/jobs/{ref}/artifacts/{path}")

    def rerun(self, ref: str) -> JobOut:
        return self._call(JobOut, "POST", f"/jobs/{ref}/rerun")

    # -- model registry ----------------------------------------------------------------------------------
    def models(self, project: str | None = None) -> list[ModelOut]:
        return self._get_list(_MODELS, "/models", params={"project": project} if project else {})

    def model(self, name: str, project: str | None = None) -> ModelDetail:
        return self._call(ModelDetail, "GET", f"/models/{name}", params=_project(project))

    def model_version(self, ref: str, project: str | None = None) -> ModelVersionOut:
        """``name:3``, ``name@alias`` or ``name`` (the latest version)."""
        name, tail = _split_ref(ref)
        if tail is None:
            detail = self.model(name, project)
            if not detail.versions:
                raise NotFoundError(f"model {name} has no versions")
            return detail.versions[-1]
        return self._call(ModelVersionOut, "GET", f"/models/{name}/versions/{tail}", params=_project(project))

    def model_file(self, name: str, version: int, path: str, project: str | None = None) -> Iterator[bytes]:
        """One of a version's files (as its ``files`` lists them), streamed."""
        yield from self._stream(f"/models/{name}/versions/{version}/files/{path}", _project(project))

    def register_model(self, name: str, job: str, path: str, *, example_input: str | None = None,
                       project: str | None = None, description: str = "") -> ModelVersionOut:
        body = RegisterModelIn(job=job, path=path, example_input=example_input, project=project, description=description)
        return self._call(ModelVersionOut, "POST", f"/models/{name}/versions", json=body.model_dump(mode="json"))

    def set_alias(self, name: str, alias: str, version: int, project: str | None = None) -> AliasEventOut:
        return self._call(AliasEventOut, "PUT", f"/models/{name}/aliases/{alias}", params=_project(project),
                          json=AliasIn(version=version).model_dump())

    def delete_alias(self, name: str, alias: str, project: str | None = None) -> AliasEventOut:
        return self._call(AliasEventOut, "DELETE", f"/models/{name}/aliases/{alias}", params=_project(project))

    def alias_history(self, name: str, alias: str, project: str | None = None) -> list[AliasEventOut]:
        return self._get_list(_ALIAS_EVENTS, f"/models/{name}/aliases/{alias}/history", params=_project(project))

    def rollback_alias(self, name: str, alias: str, project: str | None = None) -> AliasEventOut:
        return self._call(AliasEventOut, "POST", f"/models/{name}/aliases/{alias}/rollback", params=_project(project))

    def delete_model_version(self, name: str, version: int, project: str | None = None) -> None:
        self._request("DELETE", f"/models/{name}/versions/{version}", params=_project(project))

    def export_model(self, ref: str, fmt: str, *, generated: int = 1000, project: str | None = None) -> ExportOut:
        name, tail = _split_ref(ref)
        if tail is None:
            tail = str(self.model_version(name, project).version)
        return self._call(ExportOut, "POST", f"/models/{name}/versions/{tail}/export", params=_project(project),
                          json=ExportIn(format=fmt, generated=generated).model_dump())  # type: ignore[arg-type]

    # -- services ----------------------------------------------------------------------------------------
    def services(self) -> list[ServiceOut]:
        return self._get_list(_SERVICES, "/services")

    def service(self, name: str) -> ServiceDetail:
        return self._call(ServiceDetail, "GET", f"/services/{name}")

    def apply_service(self, spec: ServiceSpec) -> ServiceDetail:
        """Create the service, or change it (a new revision when what a replica runs changes)."""
        return self._call(ServiceDetail, "PUT", "/services", json=ApplyServiceIn(spec=spec).model_dump(mode="json"))

    def update_service(self, name: str, **changes: Any) -> ServiceDetail:
        """``model``, ``runtime``, ``canary`` (first step's percent; 0 = rolling), ``cpus``, ``memory``,
        ``max_batch_size``, ``max_wait_ms``."""
        body = UpdateServiceIn(**changes)
        return self._call(ServiceDetail, "PATCH", f"/services/{name}", json=body.model_dump(mode="json", exclude_none=True))

    def scale_service(self, name: str, **scaling: Any) -> ServiceDetail:
        """``replicas=N``, or ``min``/``max`` with ``target_concurrency`` or ``target_rps``."""
        body = ScaleServiceIn(**scaling)
        return self._call(ServiceDetail, "POST", f"/services/{name}/scale", json=body.model_dump(exclude_none=True))

    def service_samples(self, name: str, since: float | None = None) -> list[ServiceSampleOut]:
        """The service's traffic as the gateway measured it, every few seconds (``revision`` None: all)."""
        params = {} if since is None else {"since": since}
        return self._get_list(_SERVICE_SAMPLES, f"/services/{name}/samples", params=params)

    def job_usage(self, ref: str, since: float | None = None) -> list[UsageSampleOut]:
        """The CPU and memory samples of the job's containers, oldest first (the last hour by default)."""
        return self._get_list(_USAGE_SAMPLES, f"/jobs/{ref}/usage", params={} if since is None else {"since": since})

    def node_usage(self, since: float | None = None) -> list[NodeUsageSampleOut]:
        """Each node's job containers summed per usage round, oldest first (the last hour by default)."""
        return self._get_list(_NODE_USAGE, "/nodes/usage", params={} if since is None else {"since": since})

    def gpu_usage(self, since: float | None = None, node: str | None = None,
                  max_points: int | None = None) -> list[GpuSeriesOut]:
        """Each GPU's utilization and memory per usage round, one series per node and device (the last hour
        by default; at most ``max_points`` a series, downsampled as metric series are)."""
        params: dict[str, str | float] = {} if since is None else {"since": since}
        if node is not None:
            params["node"] = node
        if max_points is not None:
            params["max_points"] = max_points
        return self._get_list(_GPU_USAGE, "/nodes/gpus/usage", params=params)

    def rollback_service(self, name: str) -> ServiceDetail:
        return self._call(ServiceDetail, "POST", f"/services/{name}/rollback")

    def delete_service(self, name: str) -> None:
        self._request("DELETE", f"/services/{name}")

    def infer(self, endpoint: str, model: str, body: dict[str, Any], *, timeout_s: float = REQUEST_TIMEOUT_S
              ) -> dict[str, Any]:
        """One v2 inference through a service's endpoint (``ServiceOut.endpoint``), with this client's token."""
        url = f"{endpoint.rstrip('/')}/v2/models/{model}/infer"
        try:
            response = httpx.post(url, content=orjson.dumps(body), timeout=timeout_s,
                                  headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"the service endpoint {endpoint} did not answer ({exc})") from None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            raise _endpoint_error(response.status_code, f"{url}: {response.status_code}: {message}")
        result: dict[str, Any] = response.json()
        return result

    # -- nodes -------------------------------------------------------------------------------------------
    def nodes(self) -> list[NodeOut]:
        return self._get_list(_NODES, "/nodes")

    def add_node(self, name: str, engine_url: str, *, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, labels: dict[str, str] | None = None, address: str = "") -> NodeOut:
        body = NodeIn(name=name, engine_url=engine_url, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                      labels=labels or {}, address=address)
        return self._call(NodeOut, "POST", "/nodes", json=body.model_dump(mode="json"))

    def set_node_status(self, name: str, status: NodeStatus | str) -> NodeOut:
        """``ready`` or ``draining``."""
        return self._call(NodeOut, "PATCH", f"/nodes/{name}", json={"status": str(status)})

    def drain_node(self, name: str, *, undo: bool = False) -> NodeOut:
        """Stop placing new jobs on the node (running ones continue); ``undo`` makes it schedulable again."""
        return self.set_node_status(name, NodeStatus.READY if undo else NodeStatus.DRAINING)

    def remove_node(self, name: str, *, force: bool = False) -> None:
        self._request("DELETE", f"/nodes/{name}", params={"force": force})

    # -- tenancy -----------------------------------------------------------------------------------------
    def me(self) -> UserOut:
        return self._call(UserOut, "GET", "/me")

    def create_user(self, name: str, *, projects: list[str], is_admin: bool = False) -> UserOut:
        """The answer carries the user's API token, which is shown only this once."""
        body = UserIn(name=name, projects=projects, is_admin=is_admin)
        return self._call(UserOut, "POST", "/users", json=body.model_dump(mode="json"))

    def create_token(self) -> TokenOut:
        """A new API token for the calling user."""
        return self._call(TokenOut, "POST", "/tokens")

    def projects(self) -> list[ProjectOut]:
        return self._get_list(_PROJECTS, "/projects")

    def add_member(self, project: str, user: str, *, role: Literal["member", "admin"] = "member") -> None:
        body = MemberIn(user=user, role=role)
        self._request("POST", f"/projects/{project}/members", json=body.model_dump(mode="json"))

    def set_host_network(self, project: str, *, allowed: bool) -> ProjectOut:
        """Allow (or forbid) the project's gangs the nodes' own network, to span nodes (admin only)."""
        return self._call(ProjectOut, "PUT", f"/projects/{project}/host-network",
                          json=HostNetworkIn(allowed=allowed).model_dump(mode="json"))

    def set_quota(self, project: str, *, cpus: float | None, memory: int | None, gpus: float | None) -> ProjectOut:
        body = QuotaIn(cpus=cpus, memory=memory, gpus=gpus)
        return self._call(ProjectOut, "PUT", f"/projects/{project}/quota", json=body.model_dump(mode="json"))


    # -- what a project's jobs may mount --
    def host_paths(self, project: str) -> list[HostPathOut]:
        return self._get_list(_HOST_PATHS, f"/projects/{project}/host-paths")

    def allow_host_path(self, project: str, prefix: str, *, writable: bool = False) -> HostPathOut:
        body = HostPathIn(prefix=prefix, writable=writable)
        return self._call(HostPathOut, "POST", f"/projects/{project}/host-paths", json=body.model_dump(mode="json"))

    def revoke_host_path(self, project: str, prefix: str) -> None:
        self._request("DELETE", f"/projects/{project}/host-paths", params={"prefix": prefix})

    def volumes(self, project: str | None = None) -> VolumesOut:
        params = {"project": project} if project else {}
        return self._call(VolumesOut, "GET", "/volumes", params=params)

    def remove_volume(self, project: str, name: str) -> None:
        self._request("DELETE", f"/volumes/{project}/{name}")


_JOBS = TypeAdapter(list[JobOut])
_RUNS = TypeAdapter(list[RunSummary])
_CHECKPOINTS = TypeAdapter(list[CheckpointOut])
_ARTIFACTS = TypeAdapter(list[ArtifactOut])
_MODELS = TypeAdapter(list[ModelOut])
_ALIAS_EVENTS = TypeAdapter(list[AliasEventOut])
_SERVICES = TypeAdapter(list[ServiceOut])
_SERVICE_SAMPLES = TypeAdapter(list[ServiceSampleOut])
_USAGE_SAMPLES = TypeAdapter(list[UsageSampleOut])
_NODE_USAGE = TypeAdapter(list[NodeUsageSampleOut])
_GPU_USAGE = TypeAdapter(list[GpuSeriesOut])


def _project(project: str | None) -> dict[str, str]:
    return {"project": project} if project else {}


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``name:3`` → (name, "3"); ``name@prod`` → (name, "@prod"); ``name`` → (name, None)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, "@" + alias
    if ":" in ref:
        name, version = ref.rsplit(":", 1)
        return name, version
    return ref, None
_HOST_PATHS = TypeAdapter(list[HostPathOut])
_NODES = TypeAdapter(list[NodeOut])
_PROJECTS = TypeAdapter(list[ProjectOut])


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _endpoint_error(status: int, message: str) -> DeepdockError:
    """An endpoint's 4xx/5xx as the error class the API uses for the same status."""
    from deepdock.errors import AuthenticationError, PayloadTooLargeError, SpecError

    by_status: dict[int, type[DeepdockError]] = {400: SpecError, 401: AuthenticationError, 404: NotFoundError,
                                                 413: PayloadTooLargeError}
    return by_status.get(status, DeepdockError)(message, details={"status": status})


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message, details = error.get("code", ""), error["message"], error.get("details")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DeepdockError(f"HTTP {response.status_code}: {response.text[:500]}") from None
    raise error_from_wire(code, message, details)
