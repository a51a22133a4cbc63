"""/api/v1/nodes through the app: register, list with allocations, drain, remove; 404/409/422 mapping
(an engine that does not answer at registration is the caller's input: 422)."""

from __future__ import annotations

JOB = {"name": "train", "image": "busybox:latest", "command": ["sleep", "100"],
       "resources": {"cpus": 2, "memory": "1g"}}


def add(api, name="a", url=None):
    return api.post("/api/v1/nodes", json={"name": name, "engine_url": url or f"fake://{name}"})


def test_register_list_and_allocations(steps, api):
    steps.node("a", cpus=8, gpus=1, register=False)
    r = add(api)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["status"], body["health"], body["draining"], body["cpus"]) == ("a", "ready", "ready",
                                                                                              False, 8)
    assert body["gpus"][0]["memory"] == 80 * 1024**3
    api.post("/api/v1/jobs", json={"spec": JOB})
    steps.schedule()
    (node,) = api.get("/api/v1/nodes").json()
    assert node["allocated_cpus"] == 2 and node["allocated_memory"] == 1024**3


def test_register_errors(steps, api):
    steps.node("a", register=False)
    assert add(api, "Not A Name").status_code == 422
    silent = steps.node("b", register=False)
    silent.set_unreachable(True)
    r = add(api, "b")
    assert r.status_code == 422 and r.json()["error"]["code"] == "engine_unreachable"
    assert "node b: engine fake://b did not answer" in r.json()["error"]["message"]
    assert add(api).status_code == 201
    r = add(api)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_drain_and_ready(steps, api):
    steps.node("a")
    r = api.patch("/api/v1/nodes/a", json={"status": "draining"})
    assert r.status_code == 200 and (r.json()["status"], r.json()["draining"]) == ("draining", True)
    assert steps.node_row("a").draining
    r = api.patch("/api/v1/nodes/a", json={"status": "ready"})
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_drain_errors(steps, api, user_token):
    steps.node("a")
    r = api.patch("/api/v1/nodes/a", json={"status": "unreachable"})  # health is not the admin's to set
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_spec"
    assert api.patch("/api/v1/nodes/a", json={"status": "sleeping"}).status_code == 422
    assert api.patch("/api/v1/nodes/nope", json={"status": "draining"}).status_code == 404
    r = api.patch("/api/v1/nodes/a", json={"status": "draining"}, headers=user_token("bob", ["default"]))
    assert r.status_code == 403


def test_remove_a_busy_node_needs_force(steps, api):
    steps.node("a")
    steps.running_job(["a"])
    r = api.delete("/api/v1/nodes/a")
    assert r.status_code == 409 and "runs 1 job replica" in r.json()["error"]["message"]
    assert api.delete("/api/v1/nodes/a", params={"force": True}).status_code == 204
    assert api.get("/api/v1/nodes").json() == []
    assert api.delete("/api/v1/nodes/a").status_code == 404


def test_gpu_readings_and_their_history_through_the_api(steps, api, user_token):
    from deepdock.compute.base import GpuStats

    engine = steps.node("g", gpus=2, register=False)
    assert add(api, "g").status_code == 201
    engine.set_gpu_stats([GpuStats(0, "GPU-g-0", utilization_percent=55.0, memory_used=1024**3,
                                   memory_total=80 * 1024**3, temperature_c=50.0, power_w=250.0)])
    steps.controller.usage_once()
    # Readings name no job: any user reads them (the router's clock is the wall clock; the step's is the
    # fake one, so the history is asked for from the epoch).
    headers = user_token("reader", ["default"])
    (series, idle) = api.get("/api/v1/nodes/gpus/usage", params={"since": 0, "node": "g"}, headers=headers).json()
    assert (series["node"], series["index"], series["utilization_percent"], series["memory_total"]) == (
        "g", 0, [55.0], 80 * 1024**3)
    assert idle["index"] == 1 and len(idle["at"]) == 1
    assert api.get("/api/v1/nodes/gpus/usage", params={"since": 0, "node": "nope"}).json() == []
    for bad in ({"max_points": 1}, {"since": "nan"}, {"max_points": "many"}):
        r = api.get("/api/v1/nodes/gpus/usage", params=bad)
        assert r.status_code == 422, (bad, r.text)
