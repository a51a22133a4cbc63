"""The typed client against a scripted API (httpx.MockTransport): what it sends, the api models it gives
back, and the deepdock.errors classes that server errors come back as."""

from __future__ import annotations

import gzip
import io
import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from deepdock.api import (
    AttemptStatus,
    CodeOut,
    JobDetail,
    JobOut,
    JobStatus,
    JobStatusOut,
    NodeHealth,
    NodeIn,
    NodeOut,
    NodeStatus,
    PendingReason,
    ProjectOut,
    ReplicaStatus,
    StopRequest,
    SubmitJob,
    TokenOut,
    UserOut,
)
from deepdock.client import Client, ServerUnreachableError, UnexpectedResponseError, package_code
from deepdock.errors import (
    BuildError,
    ConflictError,
    DeepdockError,
    NotFoundError,
    PayloadTooLargeError,
    SpecError,
    UnschedulableError,
)
from deepdock.settings import Settings
from deepdock.specs.job import JobSpec
from tests.cli.fakeapi import TOKEN, FakeApi, detail_body, job_body, node_body, paged, pending, project_body

SHA = "ab" * 32


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def client(api: FakeApi, tmp_path: Path) -> Client:
    return api.client(tmp_path / "home")


def spec(**over: object) -> JobSpec:
    return JobSpec.model_validate({"name": "train", "image": "busybox:latest", "command": ["echo", "hi"], **over})


# -- jobs ---------------------------------------------------------------------------------------------------
def test_jobs_are_typed_and_the_filters_are_sent(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs", [job_body(), job_body(id="j-2", status="QUEUED", pending_reason=pending(position=3))])
    jobs = client.jobs(status=[JobStatus.QUEUED, "RUNNING"], project="vision", name="train", limit=5)
    assert [type(j) for j in jobs] == [JobOut, JobOut]
    assert jobs[0].status is JobStatus.RUNNING and jobs[0].pending_reason is None
    assert jobs[1].status is JobStatus.QUEUED
    assert jobs[1].pending_reason == PendingReason(code="insufficient_resources", position=3, details={},
                                                   message="no node has 4 free CPUs; the most free on one node is 2")
    (request,) = api.requests
    assert request.url.params.get_list("status") == ["QUEUED", "RUNNING"]
    assert (request.url.params["project"], request.url.params["name"], request.url.params["limit"]) == ("vision", "train", "5")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_jobs_without_filters_send_only_the_limit(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs", [])
    assert client.jobs() == []
    assert dict(api.requests[0].url.params) == {"limit": "100"}


def test_jobs_sends_the_before_cursor(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs", [])
    client.jobs(limit=10, before=1_700_000_000.25)
    assert dict(api.requests[0].url.params) == {"limit": "10", "before": "1700000000.25"}


def test_iter_jobs_pages_with_before_until_a_short_page(api: FakeApi, client: Client) -> None:
    jobs = [job_body(id=f"j-{i}", submitted_at=1000.0 - i) for i in range(7)]
    api.reply("GET", "/jobs", paged(jobs))
    got = list(client.iter_jobs(status=["FAILED"], page_size=3))
    assert [j.id for j in got] == [f"j-{i}" for i in range(7)]
    sent = [dict(r.url.params) for r in api.requests]
    # Each page starts at the previous one's oldest instant (given again, dropped by id), so pages overlap by one.
    assert [p.get("before") for p in sent] == [None] + [repr(math.nextafter(t, math.inf)) for t in (998.0, 996.0, 994.0)]
    assert all(r.url.params.get_list("status") == ["FAILED"] and r.url.params["limit"] == "3" for r in api.requests)


def test_iter_jobs_loses_no_job_submitted_in_the_same_instant_as_a_page_boundary(api: FakeApi, client: Client) -> None:
    times = [10.0, 9.0, 8.0, 8.0, 8.0, 7.0, 6.0]  # a page of 3 ends inside the three jobs at 8.0
    jobs = [job_body(id=f"j-{i}", submitted_at=t) for i, t in enumerate(times)]
    api.reply("GET", "/jobs", paged(jobs))
    assert [j.id for j in client.iter_jobs(page_size=3)] == [f"j-{i}" for i in range(7)]


def test_iter_jobs_moves_past_a_full_page_of_one_instant(api: FakeApi, client: Client) -> None:
    jobs = [job_body(id=f"j-{i}", submitted_at=5.0) for i in range(3)] + [job_body(id="j-old", submitted_at=1.0)]
    api.reply("GET", "/jobs", paged(jobs))
    assert [j.id for j in client.iter_jobs(page_size=3)] == ["j-0", "j-1", "j-2", "j-old"]


def test_job_detail_types_every_nested_status(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs/train", detail_body(status="SCHEDULED", stop_requested="preempted"))
    d = client.job("train")
    assert isinstance(d, JobDetail)
    assert d.status is JobStatus.SCHEDULED and d.stop_requested is StopRequest.PREEMPTED
    (attempt,) = d.attempt_list
    assert attempt.status is AttemptStatus.RUNNING
    assert attempt.replicas[0].status is ReplicaStatus.RUNNING and attempt.replicas[0].container_id == "c0ffee"
    assert [(e.from_status, e.to_status) for e in d.events] == [(None, JobStatus.QUEUED),
                                                                 (JobStatus.QUEUED, JobStatus.SCHEDULED)]
    assert d.cohort == "train-1" and d.artifacts_dir.endswith("j-1a2b3c")


def test_the_preempting_reason_keeps_its_victims(api: FakeApi, client: Client) -> None:
    # What the scheduling step writes while a job waits for the jobs it preempted (position 0).
    reason = {"code": "preempting", "message": "preempting 2 jobs", "position": 0, "details": {"victims": ["j-a", "j-b"]}}
    api.on("GET", "/jobs/j-1/status", {"id": "j-1", "status": "QUEUED", "status_reason": "", "pending_reason": reason})
    status = client.status("j-1")
    assert isinstance(status, JobStatusOut) and status.status is JobStatus.QUEUED
    assert status.pending_reason is not None
    assert (status.pending_reason.code, status.pending_reason.position) == ("preempting", 0)
    assert status.pending_reason.details == {"victims": ["j-a", "j-b"]}


def test_a_reason_without_details_parses(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs/j-1/status", {"id": "j-1", "status": "QUEUED", "status_reason": "",
                                       "pending_reason": {"code": "quota_exhausted", "message": "m", "position": 2}})
    reason = client.status("j-1").pending_reason
    assert reason is not None and reason.details == {}


def test_fields_a_newer_server_adds_are_ignored(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs/j-1", detail_body(queue_position=4, attempt_list=[
        {**detail_body()["attempt_list"][0], "exit_signal": 9}]))
    d = client.job("j-1")
    assert d.id == "j-1a2b3c" and not hasattr(d, "queue_position")


def test_an_unknown_status_is_one_clear_error_not_a_silent_string(api: FakeApi, client: Client) -> None:
    api.on("POST", "/jobs/j-1/stop", job_body(status="SLEEPING"))
    api.on("GET", "/nodes", [node_body(status="asleep")])
    with pytest.raises(UnexpectedResponseError, match=r"answered POST /api/v1/jobs/j-1/stop .*: status: Input should be"):
        client.stop("j-1")
    with pytest.raises(UnexpectedResponseError, match=r"GET /api/v1/nodes .*0\.status"):
        client.nodes()


def test_a_body_that_is_not_json_is_one_clear_error(api: FakeApi, client: Client) -> None:
    api.on("GET", "/me", content=b"<html>welcome</html>")
    with pytest.raises(UnexpectedResponseError, match="cannot read"):
        client.me()


def test_stop_returns_the_job(api: FakeApi, client: Client) -> None:
    api.on("POST", "/jobs/j-1/stop", job_body(status="RUNNING", stop_requested="user"))
    j = client.stop("j-1")
    assert isinstance(j, JobOut) and j.stop_requested is StopRequest.USER


def test_submit_sends_the_spec_and_the_code_hash(api: FakeApi, client: Client) -> None:
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    j = client.submit(spec(), SHA)
    assert j.status is JobStatus.QUEUED
    body = api.json_sent("POST", "/jobs")
    assert body["code_sha256"] == SHA
    assert body["spec"] == spec().model_dump(mode="json")


def test_a_malformed_code_hash_is_refused_before_sending(api: FakeApi, client: Client) -> None:
    with pytest.raises(ValidationError, match="code_sha256"):
        client.submit(spec(), "not-a-hash")
    assert api.requests == []


def test_run_uploads_the_code_folder_then_submits_with_its_hash(api: FakeApi, client: Client, tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "train.py").write_text("print('hi')\n")
    (code / "pkg" / "m.py").write_text("X = 1\n")
    (code / "pkg" / "m.pyc").write_bytes(b"\0")
    for skipped in (".git", "__pycache__", ".venv"):
        (code / skipped).mkdir()
        (code / skipped / "junk").write_text("x")
    api.on("POST", "/code", {"sha256": SHA, "size": 123}, status=201)
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    job = client.run(spec(code=str(code)))
    assert job.status is JobStatus.QUEUED
    (upload,) = api.sent("POST", "/code")
    assert upload.headers["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(upload.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["pkg/m.py", "train.py"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert api.json_sent("POST", "/jobs")["code_sha256"] == SHA


def test_run_without_code_uploads_nothing(api: FakeApi, client: Client) -> None:
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    client.run(spec())
    assert [r.url.path for r in api.requests] == ["/api/v1/jobs"]
    assert api.json_sent("POST", "/jobs")["code_sha256"] is None


def test_upload_code_returns_what_the_server_stored(api: FakeApi, client: Client, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a\n")
    api.on("POST", "/code", {"sha256": SHA, "size": 99}, status=201)
    assert client.upload_code(tmp_path) == CodeOut(sha256=SHA, size=99)


def test_package_code_is_the_same_bytes_for_the_same_files(tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text("b\n")
    (tmp_path / "a.py").write_text("a\n")
    first = package_code(tmp_path).data  # still importable from deepdock.client
    (tmp_path / "a.py").touch()
    assert package_code(tmp_path).data == first
    assert gzip.decompress(first)  # a real gzip stream


def test_run_with_a_missing_code_folder_is_a_spec_error_before_any_upload(api: FakeApi, client: Client,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=f"code folder {tmp_path / 'nope'} does not exist"):
        client.run(spec(code=str(tmp_path / "nope")))
    assert api.requests == []


def test_secrets_left_out_are_named_to_warn_or_as_a_python_warning(api: FakeApi, client: Client,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    (tmp_path / ".env").write_text("TOKEN=1")
    api.on("POST", "/code", {"sha256": SHA, "size": 99}, status=201)
    said: list[str] = []
    client.upload_code(tmp_path, warn=said.append)
    assert said == ["left out of the code package (secrets): .env - add `!.env` to .deepdockignore to include"]
    with pytest.warns(UserWarning, match=r"\(secrets\): \.env"):
        client.upload_code(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(api.sent("POST", "/code")[0].content), mode="r:gz") as tar:
        assert tar.getnames() == ["train.py"]


def test_logs_stream_bytes_with_their_options(api: FakeApi, client: Client) -> None:
    api.on("GET", "/jobs/j-1/logs", content=b"hello\nbye\n")
    assert b"".join(client.logs("j-1", follow=True, attempt=2, rank=1)) == b"hello\nbye\n"
    assert dict(api.requests[0].url.params) == {"follow": "true", "rank": "1", "attempt": "2"}


def test_logs_errors_map_too(api: FakeApi, client: Client) -> None:
    api.error("GET", "/jobs/j-1/logs", 404, "not_found", "job j-1 has no attempt 3")
    with pytest.raises(NotFoundError, match="no attempt 3"):
        b"".join(client.logs("j-1", attempt=3))


# -- nodes --------------------------------------------------------------------------------------------------
def test_an_older_servers_node_gets_health_and_draining_from_its_status(api: FakeApi, client: Client) -> None:
    api.on("GET", "/nodes", [node_body(name="a"), node_body(name="b", status="draining"),
                             node_body(name="c", status="unreachable")])
    nodes = client.nodes()
    assert [type(n) for n in nodes] == [NodeOut] * 3
    assert [(n.status, n.health, n.draining) for n in nodes] == [
        (NodeStatus.READY, NodeHealth.READY, False),
        (NodeStatus.DRAINING, NodeHealth.READY, True),
        (NodeStatus.UNREACHABLE, NodeHealth.UNREACHABLE, False),
    ]
    assert nodes[0].gpus[0].model == "A100" and nodes[0].gpus[0].memory == 80 * 1024**3


def test_a_newer_servers_health_and_draining_are_taken_as_sent(api: FakeApi, client: Client) -> None:
    api.on("GET", "/nodes", [node_body(status="unreachable", health="unreachable", draining=True)])
    (node,) = client.nodes()
    assert (node.status, node.health, node.draining) == (NodeStatus.UNREACHABLE, NodeHealth.UNREACHABLE, True)


def test_add_node_sends_the_engine_and_labels(api: FakeApi, client: Client) -> None:
    api.on("POST", "/nodes", node_body(name="b", engine_url="tcp://b:2376"), status=201)
    node = client.add_node("b", "tcp://b:2376", tls_ca="/ca.pem", labels={"zone": "a"})
    assert node.name == "b" and node.engine_url == "tcp://b:2376"
    assert api.json_sent("POST", "/nodes") == {"name": "b", "engine_url": "tcp://b:2376", "tls_ca": "/ca.pem",
                                               "tls_cert": None, "tls_key": None, "labels": {"zone": "a"},
                                               "address": ""}


@pytest.mark.parametrize(("undo", "sent"), [(False, "draining"), (True, "ready")])
def test_drain_node_patches_the_status(api: FakeApi, client: Client, undo: bool, sent: str) -> None:
    api.on("PATCH", "/nodes/b", node_body(name="b", status=sent))
    assert client.drain_node("b", undo=undo).status == sent
    assert api.json_sent("PATCH", "/nodes/b") == {"status": sent}


def test_remove_node_passes_force(api: FakeApi, client: Client) -> None:
    api.on("DELETE", "/nodes/b", status=204)
    client.remove_node("b", force=True)
    assert [r.method for r in api.requests] == ["DELETE"]
    assert api.requests[0].url.params["force"] == "true"


# -- tenancy ------------------------------------------------------------------------------------------------
def test_tenancy_calls_return_their_models(api: FakeApi, client: Client) -> None:
    api.on("GET", "/me", {"name": "admin", "is_admin": True})
    api.on("POST", "/users", {"name": "ann", "is_admin": False, "token": "tok"}, status=201)
    api.on("POST", "/tokens", {"token": "tok2"}, status=201)
    api.on("GET", "/projects", [project_body(), project_body(name="vision", quota_gpus=2)])
    api.on("PUT", "/projects/vision/quota", project_body(name="vision", quota_cpus=4, quota_memory=2**33))
    api.on("POST", "/projects/vision/members", status=204)
    assert client.me() == UserOut(name="admin", is_admin=True, token=None)
    assert client.create_user("ann", projects=["vision"]).token == "tok"
    assert client.create_token() == TokenOut(token="tok2")
    projects = client.projects()
    assert [type(p) for p in projects] == [ProjectOut, ProjectOut] and projects[1].quota_gpus == 2
    assert client.set_quota("vision", cpus=4, memory=2**33, gpus=None).quota_memory == 2**33
    client.add_member("vision", "ann", role="admin")
    assert api.json_sent("POST", "/users") == {"name": "ann", "is_admin": False, "projects": ["vision"]}
    assert api.json_sent("PUT", "/projects/vision/quota") == {"cpus": 4.0, "memory": 2**33, "gpus": None}
    assert api.json_sent("POST", "/projects/vision/members") == {"user": "ann", "role": "admin"}


# -- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "code", "cls"), [
    (404, "not_found", NotFoundError),
    (409, "conflict", ConflictError),
    (422, "invalid_spec", SpecError),
    (422, "unschedulable", UnschedulableError),
    (413, "payload_too_large", PayloadTooLargeError),
    (500, "some_future_code", DeepdockError),
])
def test_server_errors_come_back_as_their_class(api: FakeApi, client: Client, status: int, code: str,
                                                cls: type[DeepdockError]) -> None:
    api.error("GET", "/jobs/x", status, code, f"it went {code}", details=[{"field": "spec"}])
    with pytest.raises(cls) as caught:
        client.job("x")
    assert type(caught.value) is cls
    assert caught.value.message == f"it went {code}" and caught.value.details == [{"field": "spec"}]


def test_a_build_error_keeps_its_step_and_output(api: FakeApi, client: Client) -> None:
    api.error("POST", "/jobs", 500, "build_failed", "pip failed", details={"step": "deps", "output": "tail"})
    with pytest.raises(BuildError) as caught:
        client.submit(spec())
    assert (caught.value.step, caught.value.output) == ("deps", "tail")


def test_an_error_that_is_not_json_is_a_plain_deepdock_error(api: FakeApi, client: Client) -> None:
    api.on("GET", "/nodes", content=b"<html>bad gateway</html>", status=502)
    with pytest.raises(DeepdockError, match="HTTP 502: <html>bad gateway") as caught:
        client.nodes()
    assert type(caught.value) is DeepdockError


def test_a_server_that_does_not_answer_is_named(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://127.0.0.1:1", "t", settings=Settings(home=tmp_path),
                transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(ServerUnreachableError, match=r"127\.0\.0\.1:1 did not answer .*deepdock server"):
            client.me()
        with pytest.raises(ServerUnreachableError):
            b"".join(client.logs("j-1"))


def test_url_and_token_come_from_the_config_file_when_not_given(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"url": "http://saved:9", "token": "saved-token"}))
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": "admin", "is_admin": True})

    with Client(settings=Settings(home=tmp_path), transport=httpx.MockTransport(answer)) as client:
        client.me()
    assert str(seen[0].url) == "http://saved:9/api/v1/me"
    assert seen[0].headers["Authorization"] == "Bearer saved-token"


# -- the wire models themselves -------------------------------------------------------------------------------
def test_request_bodies_are_strict_and_responses_are_not() -> None:
    with pytest.raises(ValidationError, match="extra"):
        NodeIn.model_validate({"name": "a", "engin_url": "tcp://a"})
    with pytest.raises(ValidationError, match="extra"):
        SubmitJob.model_validate({"spec": spec().model_dump(), "priority": 3})
    assert NodeOut.model_validate({**node_body(), "rack": "r1"}).name == "local"


def test_statuses_go_on_the_wire_as_the_same_strings() -> None:
    body = job_body(status="QUEUED", stop_requested="gang", pending_reason=pending())
    assert JobOut.model_validate(body).model_dump(mode="json") == body


def test_the_api_package_never_imports_the_server() -> None:
    code = ("import sys, deepdock.api, deepdock.client; "
            "print(sorted(m for m in sys.modules if m.startswith('deepdock.server')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
