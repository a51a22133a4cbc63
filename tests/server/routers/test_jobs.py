"""/api/v1/jobs through the app: status codes and bodies, errors mapped in one place (404, 409, 422)."""

from __future__ import annotations

from deepdock.api.enums import JobStatus
from deepdock.compute.base import LABEL_JOB
from deepdock.server.db.models import Job
from deepdock.server.services import jobs as job_service

JOB = {"name": "train", "image": "busybox:latest", "command": ["sleep", "100"],
       "resources": {"cpus": 1, "memory": "1g"}}


def submit(api, **overrides):
    return api.post("/api/v1/jobs", json={"spec": {**JOB, **overrides}})


def test_submit_answers_201_with_the_job_and_wakes_the_scheduler(steps, api):
    steps.node("a")
    steps.ctx.wake_scheduler.clear()
    r = submit(api)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["name"], body["project"], body["user"]) == ("QUEUED", "train", "default", "admin")
    assert (body["cpus"], body["memory"], body["attempts"], body["stop_requested"]) == (1, 1024**3, 0, None)
    assert steps.ctx.wake_scheduler.is_set()


def test_invalid_specs_are_422_naming_the_field(steps, api):
    steps.node("a")
    r = submit(api, resources={"cpus": 1, "colour": "red"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_spec" and "resources.colour: unknown field" in error["message"]
    r = submit(api, resources={"gpus": 0, "gpu_memory": "40g"})
    assert r.status_code == 422 and "gpu_memory" in r.json()["error"]["message"]
    assert api.post("/api/v1/jobs", json={}).status_code == 422


def test_an_impossible_gpu_memory_is_422_unschedulable(steps, api):
    steps.node("a", gpus=2, gpu_memory_gib=16)
    r = submit(api, resources={"gpus": 1, "gpu_memory": "40g"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unschedulable" and "40.0 GiB" in r.json()["error"]["message"]
    assert submit(api, resources={"gpus": 1, "gpu_memory": "16g"}).status_code == 201


def test_no_nodes_is_422_unschedulable(api):
    r = submit(api)
    assert r.status_code == 422 and "no nodes are registered" in r.json()["error"]["message"]


def test_unknown_jobs_are_404(steps, api):
    for method, path in (("get", "/api/v1/jobs/nope"), ("get", "/api/v1/jobs/nope/status"),
                         ("post", "/api/v1/jobs/nope/stop"), ("get", "/api/v1/jobs/nope/logs")):
        r = getattr(api, method)(path)
        assert r.status_code == 404, path
        assert r.json()["error"] == {"code": "not_found", "message": "no job 'nope'"}


def test_status_is_the_cheap_read(steps, api):
    steps.node("a")
    job_id = submit(api).json()["id"]
    r = api.get(f"/api/v1/jobs/{job_id}/status")
    assert r.status_code == 200
    assert r.json() == {"id": job_id, "status": "QUEUED", "status_reason": "", "pending_reason": None}
    assert api.get("/api/v1/jobs/train/status").json()["id"] == job_id  # by name too


def test_a_bad_status_filter_is_422(api):
    r = api.get("/api/v1/jobs", params={"status": "SLEEPING"})
    assert r.status_code == 422 and "SLEEPING" in r.json()["error"]["message"]


def test_stop_a_queued_job_and_a_running_one(steps, api):
    steps.node("a", cpus=1)
    running = submit(api, name="first").json()["id"]
    steps.schedule()
    queued = submit(api, name="second").json()["id"]
    r = api.post(f"/api/v1/jobs/{queued}/stop")
    assert r.status_code == 200 and r.json()["status"] == "STOPPED"
    r = api.post(f"/api/v1/jobs/{running}/stop")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["stop_requested"]) == ("RUNNING", "user")
    steps.reconcile()
    steps.reconcile()
    assert api.get(f"/api/v1/jobs/{running}/status").json()["status"] == "STOPPED"


def test_a_stop_that_keeps_meeting_concurrent_changes_is_409(steps, api, monkeypatch):
    steps.node("a")
    job_id = submit(api).json()["id"]
    steps.schedule()
    real_get_job = job_service.get_job

    def get_then_change(session, user, ref):
        job = real_get_job(session, user, ref)
        with steps.db.session() as other:
            other.get(Job, job_id).updated_at += 1
        return job

    monkeypatch.setattr(job_service, "get_job", get_then_change)
    r = api.post(f"/api/v1/jobs/{job_id}/stop")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict" and "changed concurrently" in r.json()["error"]["message"]


def test_describe_and_logs_after_a_run(steps, api):
    engine = steps.node("a")
    job_id = submit(api).json()["id"]
    steps.schedule()
    (container,) = engine.list_containers({LABEL_JOB: job_id})
    engine.write_log(container.id, "loss 0.1\n")
    engine.finish(container.id, 0)
    steps.reconcile()
    detail = api.get(f"/api/v1/jobs/{job_id}").json()
    assert detail["status"] == JobStatus.SUCCEEDED
    assert [(e["from_status"], e["to_status"]) for e in detail["events"]] == [
        (None, "QUEUED"), ("QUEUED", "SCHEDULED"), ("SCHEDULED", "STARTING"), ("STARTING", "RUNNING"),
        ("RUNNING", "SUCCEEDED")]
    (attempt,) = detail["attempt_list"]
    assert attempt["status"] == "SUCCEEDED" and attempt["replicas"][0]["exit_code"] == 0
    assert api.get(f"/api/v1/jobs/{job_id}/logs").text == "loss 0.1\n"
    assert api.get(f"/api/v1/jobs/{job_id}/logs", params={"attempt": 5}).status_code == 404


def test_other_projects_jobs_are_invisible_and_closed_to_submit(steps, api, user_token):
    steps.node("a")
    alice = user_token("alice", ["vision"])
    bob = user_token("bob", ["nlp"])
    r = api.post("/api/v1/jobs", json={"spec": {**JOB, "project": "vision"}}, headers=alice)
    assert r.status_code == 201
    job_id = r.json()["id"]
    assert api.get(f"/api/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert api.post(f"/api/v1/jobs/{job_id}/stop", headers=bob).status_code == 404
    assert api.get("/api/v1/jobs", headers=bob).json() == []
    r = api.post("/api/v1/jobs", json={"spec": {**JOB, "project": "vision"}}, headers=bob)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_a_token_is_required(api):
    for method, path in (("get", "/api/v1/jobs"), ("post", "/api/v1/jobs"), ("get", "/api/v1/jobs/x/status")):
        r = getattr(api, method)(path, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_distributed_requests_that_can_never_run_are_422_at_submit(steps, api):
    steps.node("a", cpus=4)
    steps.node("b", cpus=4)
    # Host networking is an admin's grant per project.
    r = submit(api, replicas=2, network="host")
    assert r.status_code == 422 and "allow-host-network default" in r.json()["error"]["message"]
    # Without it a gang stays on one node: two 3-CPU replicas fit no 4-CPU node.
    r = submit(api, replicas=2, resources={"cpus": 3})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unschedulable"
    assert "would fit across nodes with host networking: an admin's grant" in r.json()["error"]["message"]
    # More replicas than the whole cluster holds, even with the grant.
    assert api.put("/api/v1/projects/default/host-network", json={"allowed": True}).json()["host_network"] is True
    assert submit(api, replicas=2, resources={"cpus": 3}).status_code == 201
    r = submit(api, replicas=3, resources={"cpus": 3})
    assert r.status_code == 422 and "do not fit" in r.json()["error"]["message"]
    # GPUs that do not divide into the processes per replica.
    r = submit(api, resources={"gpus": 3}, processes_per_replica=2)
    assert r.status_code == 422 and "does not divide" in r.json()["error"]["message"]


def test_only_an_admin_grants_host_networking(steps, api, user_token):
    headers = user_token("alice", ["default"])
    r = api.put("/api/v1/projects/default/host-network", json={"allowed": True}, headers=headers)
    assert r.status_code == 403
