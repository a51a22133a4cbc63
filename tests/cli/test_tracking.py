"""`deepdock metrics | params | compare | artifacts | job | model`: what each command asks and prints."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Invoke
from tests.cli.fakeapi import FakeApi, job_body
from tests.cli.test_output import _version_body

SERIES = {"job": "j-1", "name": "loss", "total": 3, "downsampled": False, "steps": [0, 1, 2],
          "values": [1.0, 0.5, 0.25], "times": [10.0, 11.0, 12.0], "attempts": [1, 1, 2], "ranks": [0, 0, 0]}


def test_metrics_lists_series_and_exports_one_as_csv(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs/j-1/metrics", {"job": "j-1", "series": [
        {"name": "loss", "value": 0.25, "step": 2, "attempt": 2, "count": 3}]})
    api.on("GET", "/jobs/j-1/metrics/loss", SERIES)
    table = cli("metrics", "j-1")
    assert table.exit_code == 0 and "loss" in table.stdout and "0.25" in table.stdout
    csv = cli("metrics", "j-1", "--name", "loss", "--csv", "--max-points", "500")
    assert csv.exit_code == 0, csv.output
    assert csv.stdout.splitlines() == ["step,value,time,attempt,rank", "0,1.0,10.000,1,0", "1,0.5,11.000,1,0",
                                       "2,0.25,12.000,2,0"]
    assert api.requests[-1].url.params["max_points"] == "500"


def test_metrics_follow_asks_only_for_new_points_until_the_job_ends(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs/j-1/metrics/loss", SERIES)
    api.on("GET", "/jobs/j-1/metrics/loss", {**SERIES, "steps": [3], "values": [0.1], "times": [13.0],
                                             "attempts": [2], "ranks": [0]})
    api.on("GET", "/jobs/j-1/status", {"id": "j-1", "status": "RUNNING", "status_reason": "", "pending_reason": None})
    api.on("GET", "/jobs/j-1/status", {"id": "j-1", "status": "SUCCEEDED", "status_reason": "", "pending_reason": None})
    result = cli("metrics", "j-1", "--name", "loss", "--follow", "--csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "3,0.1,13.000,2,0"
    reads = [r for r in api.requests if r.url.path.endswith("/metrics/loss")]
    assert "after_step" not in reads[0].url.params and reads[1].url.params["after_step"] == "2"


def test_params_and_compare(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs/j-1/params", {"job": "j-1", "params": {"lr": 0.01}})
    assert "0.01" in cli("params", "j-1").stdout
    api.on("GET", "/compare", [
        {"id": "j-1", "name": "a", "status": "SUCCEEDED", "params": {"lr": 0.1}, "metrics": {"loss": 0.5}},
        {"id": "j-2", "name": "b", "status": "FAILED", "params": {"lr": 0.2}, "metrics": {}}])
    out = cli("compare", "j-1", "j-2")
    assert out.exit_code == 0 and "param lr" in out.stdout and "metric loss" in out.stdout
    assert api.requests[-1].url.params.get_list("job") == ["j-1", "j-2"]


def test_artifacts_ls_and_get(api: FakeApi, cli: Invoke, tmp_path: Path) -> None:
    api.on("GET", "/jobs/j-1/artifacts", [{"path": "attempt-1/rank-0/model.pt", "size": 2048, "modified_at": 1.0}])
    assert "attempt-1/rank-0/model.pt" in cli("artifacts", "ls", "j-1").stdout
    api.on("GET", "/jobs/j-1/artifacts/model.pt", content=b"weights")
    out = tmp_path / "m.pt"
    assert cli("artifacts", "get", "j-1", "model.pt", "-o", str(out)).exit_code == 0
    assert out.read_bytes() == b"weights"
    api.error("GET", "/jobs/j-1/artifacts/nope.pt", 404, "not_found", "job j-1 has no artifact 'nope.pt'")
    missing = cli("artifacts", "get", "j-1", "nope.pt")
    assert missing.exit_code == 1 and "no artifact 'nope.pt'" in missing.stderr


def test_job_rerun_and_checkpoints(api: FakeApi, cli: Invoke) -> None:
    api.on("POST", "/jobs/j-1/rerun", job_body(id="j-2", status="QUEUED"), status=201)
    assert "submitted j-2" in cli("job", "rerun", "j-1").stdout
    api.on("GET", "/jobs/j-1/checkpoints", [{"name": "ckpt-000000000005.pt", "attempt": 1, "rank": 0, "step": 5,
                                             "size": 10, "sha256": "a" * 64, "status": "stored", "created_at": 1.0}])
    assert "ckpt-000000000005.pt" in cli("job", "checkpoints", "j-1").stdout


def test_model_register_show_alias_history_rollback(api: FakeApi, cli: Invoke) -> None:
    api.on("POST", "/models/digits/versions", _version_body(), status=201)
    out = cli("model", "register", "digits", "--job", "j-d", "--path", "model.pt", "--example-input", "x.npy")
    assert out.exit_code == 0, out.output
    assert json.loads(api.requests[-1].content) == {"job": "j-d", "path": "model.pt", "example_input": "x.npy",
                                                    "project": None, "description": ""}
    assert "input      input: float32 [-1, 64]" in out.stdout
    api.on("GET", "/models/digits/versions/@production", _version_body(aliases=["production"]))
    assert "digits-mlp:1 (production)" in cli("model", "show", "digits@production").stdout
    api.on("PUT", "/models/digits/aliases/production",
           {"alias": "production", "action": "set", "from_version": 1, "to_version": 2, "by": "admin", "at": 1.0})
    assert "digits@production: 1 → 2" in cli("model", "alias", "digits", "production", "2").stdout
    assert json.loads(api.requests[-1].content) == {"version": 2}
    api.on("POST", "/models/digits/aliases/production/rollback",
           {"alias": "production", "action": "rollback", "from_version": 2, "to_version": 1, "by": "admin", "at": 2.0})
    assert "2 → 1 (rolled back)" in cli("model", "rollback", "digits", "production").stdout
    api.on("GET", "/models/digits/aliases/production/history", [
        {"alias": "production", "action": "set", "from_version": None, "to_version": 1, "by": "ann", "at": 1.0},
        {"alias": "production", "action": "rollback", "from_version": 2, "to_version": 1, "by": "bob", "at": 2.0}])
    history = cli("model", "history", "digits", "production").stdout
    assert "ann" in history and "rollback" in history
    api.error("POST", "/models/digits/aliases/staging/rollback", 409, "conflict", "alias 'staging' has no earlier version")
    refused = cli("model", "rollback", "digits", "staging")
    assert refused.exit_code == 1 and "no earlier version" in refused.stderr
    assert cli("model", "rm", "digits").exit_code != 0  # a version must be named


def test_model_containerize_names_the_export_to_run_first(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/models/digits/versions/1", _version_body())
    out = cli("model", "containerize", "digits:1")
    assert out.exit_code == 2
    assert "run `deepdock model export digits-mlp:1 --format onnx` first" in " ".join(out.stdout.split())
    out = cli("model", "containerize", "digits:1", "--runtime", "tensorrt")
    assert out.exit_code == 2 and "unknown runtime 'tensorrt'" in out.stdout
