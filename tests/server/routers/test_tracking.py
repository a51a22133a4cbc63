"""Tracking, checkpoints and the registry through the API, with the state steps moved by hand on fake
engines (SQLite and PostgreSQL): events a running job writes become series, params and stored
checkpoints; a later attempt gets the latest checkpoint; a model the job registers becomes a version with
its lineage; aliases move, keep their history and roll back; other projects see nothing."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest
from sqlalchemy import select

from deepdock.api.enums import JobStatus
from deepdock.sdk import protocol
from deepdock.server.db.models import Replica

JOB = {"name": "train", "image": "busybox:latest", "command": ["python", "train.py"],
       "resources": {"cpus": 1, "memory": "1g"}}
CKPT_DIR = "/workspace/.deepdock/checkpoints"


def metric(step: int, **values: float) -> bytes:
    return protocol.encode({"k": "m", "s": step, "t": time.time(), "v": values})


def start_job(steps, api, **spec) -> tuple[str, str]:
    r = api.post("/api/v1/jobs", json={"spec": {**JOB, **spec}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    steps.schedule()
    steps.reconcile()
    return job_id, running_container(steps, job_id)


def running_container(steps, job_id: str) -> str:
    with steps.session() as session:
        replica = session.scalar(select(Replica).where(Replica.job_id == job_id, Replica.active.is_(True)))
        assert replica is not None and replica.container_id, "the job has no running container"
        return replica.container_id


def track(steps, job_id: str, container_id: str, attempt: int = 1) -> None:
    """What the follower and the track step do in a running server."""
    engine = steps.engine("a")
    steps.ctx.logs.capture(engine, container_id, steps.ctx.logs.path(job_id, attempt, 0), follow=False)
    steps.controller.track_once()


def save_checkpoint(engine, container_id: str, step: int, data: bytes) -> str:
    name = f"ckpt-{step:012d}.pt"
    engine.put_file(container_id, f"{CKPT_DIR}/{name}", data)
    engine.write_log(container_id, protocol.encode({"k": "c", "name": name, "s": step, "size": len(data),
                                                     "sha256": hashlib.sha256(data).hexdigest()}))
    return name


def test_a_running_jobs_metrics_and_params_are_readable_while_it_runs(steps, api):
    steps.node("a")
    job_id, cid = start_job(steps, api)
    engine = steps.engine("a")
    engine.write_log(cid, b"hello\n" + protocol.encode({"k": "p", "v": {"lr": 0.01}})
                     + b"".join(metric(s, loss=1.0 / (s + 1)) for s in range(1000)))
    track(steps, job_id, cid)
    summary = api.get(f"/api/v1/jobs/{job_id}/metrics").json()
    assert summary["series"] == [{"name": "loss", "value": 0.001, "step": 999, "attempt": 1, "count": 1000}]
    series = api.get(f"/api/v1/jobs/{job_id}/metrics/loss", params={"max_points": 100}).json()
    assert series["total"] == 1000 and len(series["steps"]) == 100 and series["downsampled"]
    assert api.get(f"/api/v1/jobs/{job_id}/params").json()["params"] == {"lr": 0.01}
    # the job's own output, without the event lines
    assert api.get(f"/api/v1/jobs/{job_id}/logs").text == "hello\n"
    engine.write_log(cid, metric(1000, loss=0.0005))
    track(steps, job_id, cid)
    newer = api.get(f"/api/v1/jobs/{job_id}/metrics/loss", params={"after_step": 999}).json()
    assert newer["steps"] == [1000]


def test_checkpoints_are_copied_while_running_kept_n_and_given_to_the_next_attempt(steps, api):
    steps.node("a")
    job_id, cid = start_job(steps, api, retry={"max_retries": 1, "on": ["failed"]})
    engine = steps.engine("a")
    keep = steps.ctx.settings.checkpoints_keep
    for step in range(1, keep + 3):
        save_checkpoint(engine, cid, step * 10, f"state at {step * 10}".encode())
    track(steps, job_id, cid)
    rows = api.get(f"/api/v1/jobs/{job_id}/checkpoints").json()
    assert [r["status"] for r in rows] == ["pruned"] * 2 + ["stored"] * keep
    stored = [a["path"] for a in api.get(f"/api/v1/jobs/{job_id}/artifacts").json()]
    assert stored == [f"checkpoints/ckpt-{s * 10:012d}.pt" for s in range(3, keep + 3)]
    # the attempt fails; the retry starts with the latest checkpoint in its workdir
    engine.finish(cid, 1)
    steps.reconcile()
    steps.clock.advance(60)
    steps.schedule()
    steps.reconcile()
    second = running_container(steps, job_id)
    assert second != cid
    files = engine.files(second)
    latest = f"{CKPT_DIR}/ckpt-{(keep + 2) * 10:012d}.pt"
    assert files[latest] == f"state at {(keep + 2) * 10}".encode()
    spec = engine.spec_of(second)
    assert spec.env["DEEPDOCK_RESUMED_FROM"] == latest.rsplit("/", 1)[1]
    assert spec.env["DEEPDOCK_CHECKPOINT_DIR"] == CKPT_DIR
    assert "/workspace/.deepdock/python/deepdock/sdk/__init__.py" in files  # the SDK, without a rebuild


def test_a_checkpoint_whose_content_does_not_match_is_not_kept(steps, api):
    steps.node("a")
    job_id, cid = start_job(steps, api)
    engine = steps.engine("a")
    name = save_checkpoint(engine, cid, 1, b"good")
    engine.put_file(cid, f"{CKPT_DIR}/{name}", b"tampered")
    track(steps, job_id, cid)
    assert [r["status"] for r in api.get(f"/api/v1/jobs/{job_id}/checkpoints").json()] == ["failed"]


def register_from_job(steps, api, name: str = "digits", signature: dict | None = None, **spec) -> tuple[str, dict]:
    if "a" not in steps.cluster.engines:
        steps.node("a")
    job_id, cid = start_job(steps, api, **spec)
    engine = steps.engine("a")
    engine.write_log(cid, protocol.encode({"k": "p", "v": {"lr": 0.5}}) + metric(7, loss=0.25))
    if spec.get("volumes"):
        engine.write_log(cid, protocol.encode({"k": "d", "target": "/data", "sha256": "cd" * 32, "files": 2,
                                                "bytes": 10, "hashed_bytes": 10, "complete": True}))
    engine.put_file(cid, f"/workspace/artifacts/models/{name}/model.pt", b"weights")
    engine.put_file(cid, "/workspace/artifacts/notes.txt", b"notes")
    engine.write_log(cid, protocol.encode({"k": "r", "name": name, "dir": f"models/{name}", "signature": signature}))
    engine.finish(cid, 0)
    steps.reconcile()
    steps.reconcile()
    assert steps.job(job_id).status == JobStatus.SUCCEEDED
    return job_id, api.get(f"/api/v1/models/{name}").json()


def test_a_model_the_job_registers_becomes_a_version_with_its_lineage(steps, api):
    signature = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}], "outputs": []}
    job_id, model = register_from_job(steps, api, signature=signature,
                                      volumes=[{"source": "data", "target": "/data", "read_only": True}])
    assert model["latest_version"] == 1
    version = model["versions"][0]
    assert version["job"] == job_id and version["attempt"] == 1
    assert version["params"] == {"lr": 0.5} and version["metrics"] == {"loss": 0.25}
    assert version["signature"] == signature
    assert [f["path"] for f in version["files"]] == ["model.pt"]
    assert version["files"][0]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    lineage = version["lineage"]
    assert lineage["image"] == "busybox:latest" and lineage["image_digest"].startswith("sha256:")
    assert lineage["command"] == ["python", "train.py"]
    assert lineage["data"] == [{"source": "data", "target": "/data", "read_only": True, "kind": "volume",
                                "sha256": "cd" * 32, "files": 2, "bytes": 10, "complete": True}]

    paths = {a["path"] for a in api.get(f"/api/v1/jobs/{job_id}/artifacts").json()}
    assert {"attempt-1/rank-0/notes.txt", "attempt-1/rank-0/models/digits/model.pt"} <= paths
    assert api.get(f"/api/v1/jobs/{job_id}/artifacts/notes.txt").content == b"notes"


def test_register_from_an_artifact_path_with_an_example_input(steps, api):
    steps.node("a")
    job_id, cid = start_job(steps, api)
    engine = steps.engine("a")
    np = pytest.importorskip("numpy")
    buf = io.BytesIO()
    np.save(buf, np.zeros((8, 64), dtype=np.float32))
    engine.put_file(cid, "/workspace/artifacts/model.pt", b"w")
    engine.put_file(cid, "/workspace/artifacts/x.npy", buf.getvalue())
    engine.finish(cid, 0)
    steps.reconcile()
    steps.reconcile()
    r = api.post("/api/v1/models/mlp/versions", json={"job": job_id, "path": "model.pt", "example_input": "x.npy"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["signature"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]
    assert sorted(f["path"] for f in body["files"]) == ["example_input.npy", "model.pt"]
    for bad, code in ((({"job": job_id, "path": "missing.pt"}), 404), (({"job": job_id, "path": "../../etc/passwd"}), 422),
                      (({"job": "nope", "path": "model.pt"}), 404), (({"job": job_id, "path": "model.pt", "x": 1}), 422),
                      (({"job": job_id, "path": "model.pt", "example_input": "model.pt"}), 422)):
        assert api.post("/api/v1/models/mlp/versions", json=bad).status_code == code, bad


def test_aliases_move_keep_their_history_and_roll_back(steps, api):
    register_from_job(steps, api)
    register_from_job(steps, api)
    _, model = register_from_job(steps, api)
    assert model["latest_version"] == 3
    for version in (1, 2, 3):
        assert api.put("/api/v1/models/digits/aliases/production", json={"version": version}).status_code == 200
    r = api.post("/api/v1/models/digits/aliases/production/rollback")
    assert r.json()["from_version"] == 3 and r.json()["to_version"] == 2
    r = api.post("/api/v1/models/digits/aliases/production/rollback")
    assert r.json()["to_version"] == 1
    assert api.post("/api/v1/models/digits/aliases/production/rollback").status_code == 409
    history = api.get("/api/v1/models/digits/aliases/production/history").json()
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [
        ("set", None, 1), ("set", 1, 2), ("set", 2, 3), ("rollback", 3, 2), ("rollback", 2, 1)]
    assert all(e["by"] == "admin" for e in history)
    assert api.get("/api/v1/models/digits/versions/@production").json()["version"] == 1
    # a version an alias points to cannot be deleted; another can
    assert api.delete("/api/v1/models/digits/versions/1").status_code == 409
    assert api.delete("/api/v1/models/digits/versions/3").status_code == 204
    assert api.get("/api/v1/models/digits/versions/3").status_code == 404
    assert api.put("/api/v1/models/digits/aliases/production", json={"version": 3}).status_code == 404
    assert api.put("/api/v1/models/digits/aliases/Bad Alias", json={"version": 1}).status_code == 422
    assert api.put("/api/v1/models/digits/aliases/staging", json={"version": 1, "extra": True}).status_code == 422
    assert api.get("/api/v1/models/nope").status_code == 404


def test_users_see_and_change_only_their_projects_models(steps, api, user_token):
    register_from_job(steps, api)  # in project "default"
    eve = user_token("eve", ["other"])
    assert api.get("/api/v1/models", headers=eve).json() == []
    assert api.get("/api/v1/models/digits", headers=eve).status_code == 404
    assert api.put("/api/v1/models/digits/aliases/production", json={"version": 1}, headers=eve).status_code == 404
    assert api.post("/api/v1/models/digits/aliases/production/rollback", headers=eve).status_code == 404
    bob = user_token("bob", ["default"])
    assert [m["name"] for m in api.get("/api/v1/models", headers=bob).json()] == ["digits"]
    assert api.put("/api/v1/models/digits/aliases/staging", json={"version": 1}, headers=bob).status_code == 200
    assert api.get("/api/v1/models/digits/aliases/staging/history", headers=bob).json()[0]["by"] == "bob"


def test_rerun_repeats_the_recorded_spec_code_and_image(steps, api):
    steps.node("a")
    job_id, cid = start_job(steps, api)
    steps.engine("a").finish(cid, 0)
    steps.reconcile()
    steps.reconcile()
    r = api.post(f"/api/v1/jobs/{job_id}/rerun")
    assert r.status_code == 201, r.text
    rerun = api.get(f"/api/v1/jobs/{r.json()['id']}").json()
    original = api.get(f"/api/v1/jobs/{job_id}").json()
    assert rerun["rerun_of"] == job_id and rerun["spec"] == original["spec"]
    assert rerun["code_sha256"] == original["code_sha256"]


def test_compare_puts_params_and_final_metrics_side_by_side(steps, api):
    steps.node("a")
    ids = []
    for lr in (0.1, 0.2):
        job_id, cid = start_job(steps, api)
        steps.engine("a").write_log(cid, protocol.encode({"k": "p", "v": {"lr": lr}}) + metric(3, loss=lr * 2))
        track(steps, job_id, cid)
        ids.append(job_id)
    runs = api.get("/api/v1/compare", params={"job": ids}).json()
    assert [(r["params"]["lr"], r["metrics"]["loss"]) for r in runs] == [(0.1, 0.2), (0.2, 0.4)]
    assert api.get("/api/v1/compare", params={"job": ["nope"]}).status_code == 404
    assert json.loads(api.get("/api/v1/compare").text)["error"]["code"] in ("invalid_spec", "validation_error")


def test_after_a_node_loss_the_job_resumes_elsewhere_from_its_last_copied_checkpoint(steps, api):
    from deepdock.server.background import node_health

    engine_a = steps.node("a")
    job_id, cid = start_job(steps, api, retry={"max_retries": 1, "on": ["node_lost"]})
    name = save_checkpoint(engine_a, cid, 5, b"saved before the loss")
    track(steps, job_id, cid)
    engine_b = steps.node("b")
    engine_a.set_unreachable(True)
    steps.controller.health_once()
    steps.clock.advance(node_health.NODE_LOST_AFTER_S)
    steps.controller.health_once()
    assert steps.job(job_id).status == JobStatus.QUEUED
    steps.schedule()
    steps.reconcile()
    with steps.session() as session:
        replica = session.scalar(select(Replica).where(Replica.job_id == job_id, Replica.active.is_(True)))
        assert replica.node_name == "b"
    assert engine_b.files(replica.container_id)[f"{CKPT_DIR}/{name}"] == b"saved before the loss"


def test_the_job_is_told_its_mounts_to_hash(steps, api):
    steps.node("a")
    _, cid = start_job(steps, api, volumes=[{"source": "data", "target": "/data", "read_only": True}])
    mounts = json.loads(steps.engine("a").spec_of(cid).env["DEEPDOCK_DATA_MOUNTS"])
    assert mounts == [{"target": "/data", "source": "data", "read_only": True, "kind": "volume"}]
    r = api.post("/api/v1/jobs", json={"spec": {**JOB, "env": {"DEEPDOCK_DATA_MOUNTS": "[]"}}})
    assert r.status_code == 422 and "DEEPDOCK_DATA_MOUNTS" in r.text
