"""A scripted deepdock REST API behind ``httpx.MockTransport``, and bodies shaped as the server sends them.

Used by the client's tests and the CLI's: a test routes ``(method, path)`` to a body (or a status and a
body), runs the code under test, then reads ``api.requests`` to see what was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deepdock.client import API, Client
from deepdock.settings import Settings

URL = "http://deepdock.test"
TOKEN = "t0ken"
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeApi:
    routes: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, body: Any = None, *, status: int = 200, content: bytes | None = None) -> FakeApi:
        """Answer ``method path`` (path under /api/v1) with ``body`` as JSON (or raw ``content``).
        Routed more than once, the answers are given in turn and the last one repeats."""
        if content is not None:
            answer = httpx.Response(status, content=content)
        elif body is None:
            answer = httpx.Response(status)
        else:
            answer = httpx.Response(status, json=body)
        self.routes.setdefault((method, API + path), []).append(answer)
        return self

    def reply(self, method: str, path: str, answer: Callable[[httpx.Request], httpx.Response]) -> FakeApi:
        """Answer ``method path`` by calling ``answer`` with the request."""
        self.routes.setdefault((method, API + path), []).append(answer)
        return self

    def error(self, method: str, path: str, status: int, code: str, message: str, details: Any = None) -> FakeApi:
        error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            error["details"] = details
        return self.on(method, path, {"error": error}, status=status)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json={"error": {"code": "not_found",
                                                        "message": f"no route {request.method} {request.url.path}"}})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer

    def client(self, home: Path) -> Client:
        return Client(URL, TOKEN, settings=Settings(home=home), transport=httpx.MockTransport(self.handle))

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == API + path]

    def json_sent(self, method: str, path: str) -> Any:
        (request,) = self.sent(method, path)
        return json.loads(request.content)


# -- bodies as the server sends them ------------------------------------------------------------------------
def job_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "j-1a2b3c", "name": "train", "project": "default", "user": "admin", "status": "RUNNING",
        "status_reason": "", "image": "busybox:latest", "priority": 0, "replicas": 1, "cpus": 2.0,
        "memory": 2 * 1024**3, "gpus": 0.0, "attempts": 1, "retries_left": 0, "pending_reason": None,
        "stop_requested": None, "submitted_at": 1_700_000_000.0, "started_at": 1_700_000_001.0, "finished_at": None,
        "retry_at": None,
    }
    body.update(over)
    return body


def detail_body(**over: Any) -> dict[str, Any]:
    body = job_body()
    body.update({
        "cohort": "train-1", "attained_service": 0.0, "spec": {"name": "train"},
        "events": [
            {"at": 1_700_000_000.0, "attempt": None, "from_status": None, "to_status": "QUEUED", "reason": "submitted"},
            {"at": 1_700_000_000.5, "attempt": 1, "from_status": "QUEUED", "to_status": "SCHEDULED",
             "reason": "placed on local"},
        ],
        "attempt_list": [{
            "number": 1, "status": "RUNNING", "reason": "", "created_at": 1_700_000_000.5,
            "started_at": 1_700_000_001.0, "finished_at": None,
            "replicas": [{"rank": 0, "node": "local", "gpu_indices": [], "gpu_share": 0.0,
                          "container_name": "deepdock-j-1a2b3c-1-0", "container_id": "c0ffee", "status": "RUNNING",
                          "exit_code": None, "oom_killed": False, "started_at": 1_700_000_001.0, "finished_at": None}],
        }],
        "artifacts_dir": "/home/u/.deepdock/artifacts/j-1a2b3c",
    })
    body.update(over)
    return body


def pending(code: str = "insufficient_resources", message: str = "no node has 4 free CPUs; the most free on one node is 2",
            position: int = 1, **details: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "position": position, "details": details}


def node_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "local", "engine_url": "", "status": "ready", "cpus": 8.0, "memory": 16 * 1024**3,
        "gpus": [{"index": 0, "uuid": "GPU-0", "model": "A100", "memory": 80 * 1024**3}], "labels": {},
        "engine_version": "27.0", "allocated_cpus": 2.0, "allocated_memory": 2 * 1024**3, "allocated_gpus": 0.0,
        "last_seen_at": None, "last_error": "",
    }
    body.update(over)
    return body


def paged(jobs: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """GET /jobs as the server answers it: ``jobs`` (newest first) submitted strictly before ``before``,
    at most ``limit`` of them. Route it with ``api.reply("GET", "/jobs", paged(jobs))``."""
    def answer(request: httpx.Request) -> httpx.Response:
        before = float(request.url.params.get("before", "inf"))
        older = [j for j in jobs if j["submitted_at"] < before]
        return httpx.Response(200, json=older[:int(request.url.params["limit"])])
    return answer


def project_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "default", "quota_cpus": None, "quota_memory": None, "quota_gpus": None}
    body.update(over)
    return body
