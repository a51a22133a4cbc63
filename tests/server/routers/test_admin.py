"""/api/v1/me, /users, /tokens, /projects through the app."""

from __future__ import annotations


def test_me_and_a_new_token(api):
    assert api.get("/api/v1/me").json() == {"name": "admin", "is_admin": True, "token": None}
    r = api.post("/api/v1/tokens")
    assert r.status_code == 201
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()["name"] == "admin"


def test_users_are_made_by_admins_once(api, user_token):
    alice = user_token("alice", ["vision"])
    assert api.get("/api/v1/me", headers=alice).json() == {"name": "alice", "is_admin": False, "token": None}
    r = api.post("/api/v1/users", json={"name": "alice"})
    assert r.status_code == 409
    r = api.post("/api/v1/users", json={"name": "carol"}, headers=alice)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert api.post("/api/v1/users", json={"name": "Bad Name"}).status_code == 422
    assert api.post("/api/v1/users", json={"name": "dave", "colour": "red"}).status_code == 422


def test_projects_members_and_quotas(api, user_token):
    alice = user_token("alice", ["vision"])
    assert [p["name"] for p in api.get("/api/v1/projects", headers=alice).json()] == ["vision"]
    assert {p["name"] for p in api.get("/api/v1/projects").json()} == {"default", "vision"}
    r = api.post("/api/v1/projects/nlp/members", json={"user": "alice"})
    assert r.status_code == 204
    assert [p["name"] for p in api.get("/api/v1/projects", headers=alice).json()] == ["nlp", "vision"]
    assert api.post("/api/v1/projects/nlp/members", json={"user": "nobody"}).status_code == 404
    r = api.put("/api/v1/projects/nlp/quota", json={"cpus": 4, "gpus": 1})
    assert r.status_code == 200
    assert r.json() == {"name": "nlp", "quota_cpus": 4, "quota_memory": None, "quota_gpus": 1, "host_network": False}
    assert api.put("/api/v1/projects/nlp/quota", json={"cpus": 1}, headers=alice).status_code == 403
