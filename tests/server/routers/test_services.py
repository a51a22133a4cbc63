"""/api/v1/services through the app: apply, describe, update, scale, rollback and delete, with every
refusal a clear 4xx and nothing stored, and another project's user kept out."""

from __future__ import annotations

from tests.server.factories import make_model_version


def _models(steps) -> None:
    steps.node("a")
    with steps.session() as session:
        make_model_version(session, steps.ctx.artifacts, content=b"v1")
        make_model_version(session, steps.ctx.artifacts, content=b"v2")


def test_apply_describe_update_scale_rollback_delete(api, steps):
    _models(steps)
    r = api.put("/api/v1/services", json={"spec": {"name": "digits", "model": "digits-mlp:1", "replicas": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["target_revision"], body["desired_replicas"]) == ("deploying", 1, 2)
    assert body["endpoint"].endswith("/services/digits") and body["revisions"][0]["status"] == "building"
    assert [s["name"] for s in api.get("/api/v1/services").json()] == ["digits"]
    r = api.patch("/api/v1/services/digits", json={"model": "digits-mlp:2", "canary": 10})
    assert r.status_code == 200 and r.json()["target_revision"] == 2
    assert r.json()["spec"]["rollout"]["canary"]["steps"] == [10.0, 50.0]
    r = api.post("/api/v1/services/digits/scale", json={"min": 1, "max": 4, "target_rps": 50})
    assert r.status_code == 200 and r.json()["spec"]["autoscaling"]["max"] == 4
    # nothing served yet, so nothing to roll back to but the abandoned rollout is refused as a conflict
    r = api.post("/api/v1/services/digits/rollback")
    assert r.status_code == 409 and "no earlier revision" in r.json()["error"]["message"]
    assert api.delete("/api/v1/services/digits").status_code == 204
    assert api.get("/api/v1/services/digits").status_code == 404


def test_refusals_are_4xx_naming_the_problem(api, steps):
    _models(steps)
    cases = [
        ({"name": "digits", "model": "digits-mlp:1", "colour": "red"}, 422, "colour"),
        ({"name": "digits", "model": "digits-mlp:7"}, 404, "no version 7"),
        ({"name": "digits", "model": "digits-mlp:1", "runtime": "torchscript"}, 422, "no torchscript export"),
        ({"name": "digits", "model": "digits-mlp:1", "resources": {"cpus": 100}}, 422, "could never be placed"),
    ]
    for spec, status, message in cases:
        r = api.put("/api/v1/services", json={"spec": spec})
        assert r.status_code == status, r.text
        assert message in r.text
    assert api.get("/api/v1/services").json() == []
    r = api.post("/api/v1/services/nope/scale", json={"replicas": 2})
    assert r.status_code == 404
    assert api.post("/api/v1/services/nope/scale", json={"replicas": 2, "size": 3}).status_code == 422


def test_another_projects_user_cannot_call_change_or_delete(api, steps, user_token):
    _models(steps)
    assert api.put("/api/v1/services", json={"spec": {"name": "digits", "model": "digits-mlp:1"}}).status_code == 200
    mallory = user_token("mallory", ["other"])
    assert api.get("/api/v1/services", headers=mallory).json() == []
    for method, path, body in [("GET", "/api/v1/services/digits", None),
                               ("PATCH", "/api/v1/services/digits", {"model": "digits-mlp:2"}),
                               ("POST", "/api/v1/services/digits/rollback", None),
                               ("POST", "/api/v1/services/digits/scale", {"replicas": 3}),
                               ("DELETE", "/api/v1/services/digits", None)]:
        r = api.request(method, path, json=body, headers=mallory)
        assert r.status_code == 404, (method, path, r.text)
    # and cannot serve the project's model under a service of its own
    r = api.put("/api/v1/services", json={"spec": {"name": "mine", "model": "digits-mlp:1", "project": "other"}},
                headers=mallory)
    assert r.status_code == 404
