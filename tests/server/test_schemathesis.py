"""Every operation of the REST API, driven by schemathesis from the app's own OpenAPI schema: no 5xx and
no answer outside the schema, for generated (mostly hostile) input. Jobs included: a job-creating
strategy keeps valid jobs in the database, and path parameters are drawn from the objects that exist,
so describe, status, logs and stop run against real jobs, not only against 404s.

Bounded (``MAX_EXAMPLES`` per operation) so that CI runs it in well under a minute. The app runs its
loops on in-memory engines: a generated job is scheduled and started like any other.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from deepdock.compute.base import NodeCapacity
from deepdock.compute.pool import KIND_DOCKER, KIND_FAKE, NodeConnection
from deepdock.compute.testing.fake import FakeBackend
from deepdock.server.app import create_app
from deepdock.settings import Settings

MAX_EXAMPLES = int(os.environ.get("DEEPDOCK_SCHEMATHESIS_EXAMPLES", "30"))
NODE = "a"
IMAGE = "busybox:latest"
VALID_JOB = {"name": "probe", "image": IMAGE, "command": ["sh", "-c", "true"],
             "resources": {"cpus": 0.5, "memory": "64m"}}


class Engines:
    """One fake engine named ``a``; any other URL is an engine that does not answer."""

    def __init__(self) -> None:
        self.known = FakeBackend(capacity=NodeCapacity(cpus=64, memory=256 * 1024**3, gpus=[], engine_version="fake",
                                                       os="linux", arch="x86_64"),
                                 images={IMAGE}, engine_url=f"fake://{NODE}")

    def factory(self, conn: NodeConnection) -> FakeBackend:
        if conn.engine_url == f"fake://{NODE}":
            return self.known
        silent = FakeBackend(engine_url=conn.engine_url or "fake://silent", frozen_timeout_s=0.01)
        silent.set_unreachable(True)
        return silent


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[TestClient, str]]:
    home = tmp_path_factory.mktemp("schemathesis") / "home"
    engines = Engines()
    app = create_app(Settings(home=home, reconcile_interval_s=0.05, node_health_interval_s=0.5, stop_grace_s=0.2),
                     factories={KIND_FAKE: engines.factory, KIND_DOCKER: engines.factory}, register_local_node=False)
    with TestClient(app) as client:
        token = app.state.bootstrap_token
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1/nodes", json={"name": NODE, "engine_url": f"fake://{NODE}"},
                           headers=headers).status_code == 201
        for _ in range(3):
            assert client.post("/api/v1/jobs", json={"spec": VALID_JOB}, headers=headers).status_code == 201
        yield client, token


def without_lifespan(app):  # type: ignore[no-untyped-def]
    """The app as schemathesis sees it: requests pass through, lifespan events are answered here. The test
    client above owns the app's one lifespan (one controller); a second would race it on the database."""

    async def wrapped(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


def _pick(value: str, count: int) -> int:
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % count


@pytest.fixture(scope="module")
def api_schema(served):  # type: ignore[no-untyped-def]
    client, token = served
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", without_lifespan(client.app))

    @schema.hook
    def map_path_parameters(ctx, path_parameters):  # type: ignore[no-untyped-def]
        # Half of the refs are real jobs (by id or by name): the rest stay generated (404s).
        if path_parameters and isinstance(path_parameters.get("ref"), str):
            ref = path_parameters["ref"]
            jobs = client.get("/api/v1/jobs", params={"limit": 20},
                              headers={"Authorization": f"Bearer {token}"}).json()
            if jobs and _pick(ref, 2) == 0:
                job = jobs[_pick(ref, len(jobs))]
                path_parameters["ref"] = job["id"] if len(ref) % 2 else job["name"]
        return path_parameters

    @schema.hook
    def map_query(ctx, query):  # type: ignore[no-untyped-def]
        # Following the logs of a running job streams until it ends (the fake engine's jobs run until
        # stopped): the probe reads what is there and returns.
        if query and "follow" in query:
            query["follow"] = False
        return query

    @schema.hook
    def flatmap_body(ctx, body):  # type: ignore[no-untyped-def]
        # The job-creating strategy: a third of the POST /jobs bodies are valid specs with generated
        # names, priorities and commands, so jobs are created, scheduled and run while the rest probe.
        operation = ctx.operation
        if operation is not None and operation.path == "/api/v1/jobs" and operation.method.lower() == "post":
            valid = st.builds(lambda name, prio, words: {"spec": {**VALID_JOB, "name": name, "priority": prio,
                                                                  "command": ["echo", *words]}},
                              st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"), st.integers(-1000, 1000),
                              st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
                                       max_size=3))
            return st.one_of(st.just(body), st.just(body), valid)
        return st.just(body)

    return schema


# Excluded, and only this one: much of what the API refuses is beyond JSON Schema (a tar archive, an image
# reference's grammar, a job that fits no node, a name already taken), so a schema-valid request may get a
# documented 4xx. The other checks hold: no 5xx, every status and body as documented, invalid data refused.
EXCLUDED_CHECKS = [positive_data_acceptance]


def test_no_server_errors_and_answers_in_the_schema(api_schema, served):  # type: ignore[no-untyped-def]
    _, token = served
    headers = {"Authorization": f"Bearer {token}"}
    sent: dict[str, int] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20, "the schema lists the API's operations"
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def probe(case):  # type: ignore[no-untyped-def]  # noqa: B023 (called at once, in this iteration)
            sent[label] = sent.get(label, 0) + 1  # noqa: B023
            try:
                case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)
            except Exception as exc:
                exc.add_note(f"operation: {label}")  # noqa: B023
                raise

        probe()
    total = sum(sent.values())
    print(f"schemathesis: {total} requests over {len(sent)} operations, no server error, no schema violation")
    assert set(sent) == {f"{op.method.upper()} {op.path}" for op in operations}
