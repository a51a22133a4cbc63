"""The dashboard's two reads: a job's live stream (server-sent events) and the overview, on fake engines
with SQLite and PostgreSQL; another project's user sees neither."""

from __future__ import annotations

import json

from tests.server.routers.test_tracking import metric, start_job, track


def events(body: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_the_live_stream_sends_status_and_downsampled_metrics_then_ends(steps, api, user_token):
    steps.node("a")
    job_id, cid = start_job(steps, api)
    steps.engine("a").write_log(cid, b"".join(metric(s, loss=1.0 / (s + 1), acc=s / 1000) for s in range(1000)))
    track(steps, job_id, cid)
    api.post(f"/api/v1/jobs/{job_id}/stop")
    for _ in range(3):
        steps.reconcile()
    r = api.get(f"/api/v1/jobs/{job_id}/live", params={"max_points": 50})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    assert got[0][0] == "status" and got[0][1]["id"] == job_id and got[0][1]["status"] == "STOPPED"
    metrics = {data["name"]: data for kind, data in got if kind == "metrics"}
    assert set(metrics) == {"loss", "acc"}
    assert metrics["loss"]["fresh"] and metrics["loss"]["total"] == 1000 and len(metrics["loss"]["steps"]) == 50
    assert metrics["loss"]["steps"][-1] == 999  # LTTB keeps the last point
    assert got[-1] == ("end", {"status": "STOPPED"})
    outsider = user_token("mallory", ["other"])
    assert api.get(f"/api/v1/jobs/{job_id}/live", headers=outsider).status_code == 404
    assert api.get(f"/api/v1/jobs/{job_id}/live", params={"max_points": 1}).status_code == 422


def test_the_overview_counts_what_the_viewer_may_see(steps, api, user_token):
    steps.node("a", cpus=8, gpus=2)
    start_job(steps, api, resources={"cpus": 2, "memory": "1g"})
    r = api.post("/api/v1/jobs", json={"spec": {"name": "w", "image": "busybox:latest", "command": ["true"],
                                                "project": "other", "resources": {"cpus": 1, "memory": "1g"}}})
    assert r.status_code == 201, r.text
    admin = api.get("/api/v1/overview").json()
    assert admin["capacity"]["cpus"] == 8 and admin["capacity"]["gpus"] == 2
    assert admin["capacity"]["allocated_cpus"] == 2 and admin["capacity"]["nodes_ready"] == 1
    by_name = {p["name"]: p for p in admin["projects"]}
    assert by_name["default"]["jobs"] == {"RUNNING": 1} and by_name["default"]["used_cpus"] == 2
    assert by_name["other"]["queued"] == 1 and by_name["other"]["oldest_wait_s"] >= 0
    other = api.get("/api/v1/overview", headers=user_token("olga", ["other"])).json()
    assert [p["name"] for p in other["projects"]] == ["other"]
