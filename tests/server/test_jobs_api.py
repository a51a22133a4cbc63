"""The job API and lifecycle against in-memory engines, on SQLite and PostgreSQL."""

from __future__ import annotations

from deepdock.compute.base import LABEL_JOB
from tests.server.conftest import wait_for

JOB = {"name": "train", "image": "busybox:latest", "command": ["sleep", "100"],
       "resources": {"cpus": 2, "memory": "1g"}}


def submit(client, **overrides):
    spec = {**JOB, **overrides}
    r = client.post("/api/v1/jobs", json={"spec": spec})
    assert r.status_code == 201, r.text
    return r.json()


def status_of(client, job_id):
    return client.get(f"/api/v1/jobs/{job_id}").json()["status"]


def test_job_runs_and_succeeds(make_server, cluster):
    engine = cluster.add("a")
    client = make_server()
    assert client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"}).status_code == 201
    job = submit(client)
    wait_for(lambda: status_of(client, job["id"]) == "RUNNING", what="RUNNING")
    (container,) = engine.list_containers({LABEL_JOB: job["id"]})
    engine.write_log(container.id, b"hello from the job\n")
    engine.finish(container.id, 0)
    wait_for(lambda: status_of(client, job["id"]) == "SUCCEEDED", what="SUCCEEDED")
    detail = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert [e["to_status"] for e in detail["events"]] == ["QUEUED", "SCHEDULED", "STARTING", "RUNNING", "SUCCEEDED"]
    assert detail["attempt_list"][0]["replicas"][0]["exit_code"] == 0
    assert client.get(f"/api/v1/jobs/{job['id']}/logs").text == "hello from the job\n"
    assert engine.list_containers({LABEL_JOB: job["id"]}) == []  # removed once its logs are kept


def test_failure_reasons_and_retry(make_server, cluster):
    engine = cluster.add("a")
    client = make_server()
    client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    job = submit(client, retry={"max_retries": 1, "on": ["failed"]})
    wait_for(lambda: status_of(client, job["id"]) == "RUNNING")
    (c1,) = engine.list_containers({LABEL_JOB: job["id"]})
    engine.finish(c1.id, 3)
    wait_for(lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["attempts"] == 2, what="a retry")
    wait_for(lambda: status_of(client, job["id"]) == "RUNNING")
    (c2,) = [c for c in engine.list_containers({LABEL_JOB: job["id"]}) if c.running]
    engine.finish(c2.id, 137, oom=True)
    wait_for(lambda: status_of(client, job["id"]) == "FAILED")
    detail = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert detail["status_reason"].startswith("oom_killed")


def test_unschedulable_request_rejected_at_submit(make_server, cluster):
    cluster.add("a", gpus=0)
    client = make_server()
    client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    r = client.post("/api/v1/jobs", json={"spec": {**JOB, "resources": {"gpus": 4}}})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unschedulable"
    assert "4" in r.json()["error"]["message"]


def test_invalid_spec_names_the_field(make_server, cluster):
    cluster.add("a")
    client = make_server()
    r = client.post("/api/v1/jobs", json={"spec": {**JOB, "resources": {"cpus": 1, "colour": "red"}}})
    assert r.status_code == 422
    assert "resources.colour" in r.json()["error"]["message"]
    r = client.post("/api/v1/jobs", json={"spec": {**JOB, "resources": {"memory": "lots"}}})
    assert r.status_code == 422 and "memory" in r.json()["error"]["message"]


def test_every_endpoint_requires_a_token(make_server, cluster):
    client = make_server()
    for method, path in [("get", "/api/v1/jobs"), ("get", "/api/v1/nodes"), ("post", "/api/v1/jobs")]:
        r = getattr(client, method)(path, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401, path


def test_users_see_only_their_projects(make_server, cluster):
    cluster.add("a")
    admin = make_server()
    admin.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    alice = admin.post("/api/v1/users", json={"name": "alice", "projects": ["vision"]}).json()["token"]
    bob = admin.post("/api/v1/users", json={"name": "bob", "projects": ["nlp"]}).json()["token"]
    r = admin.post("/api/v1/jobs", json={"spec": {**JOB, "project": "vision"}},
                   headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 201
    job_id = r.json()["id"]
    as_bob = {"Authorization": f"Bearer {bob}"}
    assert admin.get(f"/api/v1/jobs/{job_id}", headers=as_bob).status_code == 404
    assert admin.get("/api/v1/jobs", headers=as_bob).json() == []
    r = admin.post("/api/v1/jobs", json={"spec": {**JOB, "project": "vision"}}, headers=as_bob)
    assert r.status_code == 403


def test_stop_sends_term_then_records_stopped(make_server, cluster):
    cluster.add("a")
    client = make_server()
    client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    job = submit(client)
    wait_for(lambda: status_of(client, job["id"]) == "RUNNING")
    client.post(f"/api/v1/jobs/{job['id']}/stop")
    wait_for(lambda: status_of(client, job["id"]) == "STOPPED", what="STOPPED")


def test_queue_waits_with_reason_when_full(make_server, cluster):
    cluster.add("a", cpus=4)
    client = make_server()
    client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    first = submit(client, resources={"cpus": 4, "memory": "1g"})
    wait_for(lambda: status_of(client, first["id"]) == "RUNNING")
    second = submit(client, resources={"cpus": 4, "memory": "1g"})
    reason = wait_for(lambda: client.get(f"/api/v1/jobs/{second['id']}").json()["pending_reason"], what="a reason")
    assert reason["code"] and reason["message"]
    assert status_of(client, second["id"]) == "QUEUED"


def test_node_loss_requeues_onto_the_other_node(make_server, cluster, monkeypatch):
    from deepdock.server.background import node_health as health

    monkeypatch.setattr(health, "NODE_LOST_AFTER_S", 0.3)
    a = cluster.add("a", cpus=4)
    b = cluster.add("b", cpus=4)
    client = make_server()
    client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    client.post("/api/v1/nodes", json={"name": "b", "engine_url": "fake://b"})
    jobs = [submit(client, resources={"cpus": 4, "memory": "1g"}, retry={"max_retries": 1, "on": ["node_lost"]})
            for _ in range(2)]
    for j in jobs:
        wait_for(lambda j=j: status_of(client, j["id"]) == "RUNNING")
    on_a = [j for j in jobs if a.list_containers({LABEL_JOB: j["id"]})]
    assert len(on_a) == 1  # spread over both nodes
    a.set_unreachable(True)
    lost = on_a[0]["id"]
    wait_for(lambda: status_of(client, lost) == "QUEUED", what="requeue")
    assert "node_lost" in client.get(f"/api/v1/jobs/{lost}").json()["status_reason"]
    # b is full until the other job ends, then the requeued job runs there.
    (other,) = [j for j in jobs if j is not on_a[0]]
    (c,) = b.list_containers({LABEL_JOB: other["id"]})
    b.finish(c.id, 0)
    wait_for(lambda: status_of(client, on_a[0]["id"]) == "RUNNING", what="rerun on b")
    assert b.list_containers({LABEL_JOB: on_a[0]["id"]})


def test_listing_filters_merge_statuses_newest_first_and_page(make_server, cluster):
    cluster.add("a", cpus=4)
    client = make_server()
    client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"})
    running = [submit(client, name=f"r{i}", project="vision", resources={"cpus": 1, "memory": "1g"}) for i in range(4)]
    for job in running:
        wait_for(lambda job=job: status_of(client, job["id"]) == "RUNNING")
    queued = [submit(client, name="q", project="nlp", resources={"cpus": 1, "memory": "1g"}) for _ in range(3)]
    for job in queued:
        wait_for(lambda job=job: client.get(f"/api/v1/jobs/{job['id']}").json()["pending_reason"] is not None)

    both = client.get("/api/v1/jobs", params={"status": ["QUEUED", "RUNNING"]}).json()
    assert [j["id"] for j in both] == [j["id"] for j in reversed(running + queued)]  # one merged, newest-first list
    assert {j["project"] for j in both} == {"vision", "nlp"} and all(j["user"] == "admin" for j in both)
    top = client.get("/api/v1/jobs", params={"status": ["RUNNING", "QUEUED"], "limit": 2}).json()
    assert [j["id"] for j in top] == [queued[2]["id"], queued[1]["id"]]
    assert [j["id"] for j in client.get("/api/v1/jobs", params={"project": "vision", "status": "RUNNING"}).json()] \
        == [j["id"] for j in reversed(running)]
    assert len(client.get("/api/v1/jobs", params={"name": "q"}).json()) == 3
    assert client.get("/api/v1/jobs", params={"project": "nlp", "status": "RUNNING"}).json() == []
    oldest_queued = client.get(f"/api/v1/jobs/{queued[0]['id']}").json()
    page = client.get("/api/v1/jobs", params={"before": oldest_queued["submitted_at"]}).json()
    assert [j["id"] for j in page] == [j["id"] for j in reversed(running)]
    r = client.get("/api/v1/jobs", params={"status": "SLEEPING"})
    assert r.status_code == 422 and "SLEEPING" in r.json()["error"]["message"]


def test_jobs_submitted_together_share_a_cohort(make_server, cluster):
    cluster.add("a")
    client = make_server()
    assert client.post("/api/v1/nodes", json={"name": "a", "engine_url": "fake://a"}).status_code == 201
    first, second = submit(client), submit(client)
    other_shape = submit(client, resources={"cpus": 1, "memory": "1g"})
    named = submit(client, cohort="sweep-7")
    cohorts = {j["id"]: client.get(f"/api/v1/jobs/{j['id']}").json()["cohort"]
               for j in (first, second, other_shape, named)}
    assert cohorts[first["id"]] == cohorts[second["id"]] == first["id"]
    assert cohorts[other_shape["id"]] == other_shape["id"]
    assert cohorts[named["id"]] == "default/sweep-7"
    bad = client.post("/api/v1/jobs", json={"spec": {**JOB, "cohort": "Not A Name!"}})
    assert bad.status_code == 422 and "cohort" in bad.text


def test_routes_that_cannot_match_answer_in_the_api_error_shape(make_server):
    client = make_server()
    missing = client.get("/api/v1/jobs/abc/metrics/%1A%0Aloss")  # a newline no path parameter matches
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = client.put("/api/v1/jobs")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
