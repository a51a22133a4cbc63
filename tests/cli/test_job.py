"""``deepdock run | ps | describe | logs | stop`` through the client against a scripted API."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Invoke
from tests.cli.fakeapi import FakeApi, detail_body, job_body, pending

SHA = "cd" * 32


def test_ps_lists_unfinished_jobs_with_why_a_queued_one_waits(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs", [job_body(status_reason="started on local"),
                            job_body(id="j-2", status="QUEUED", gpus=0.5, pending_reason=pending())])
    result = cli("ps")
    assert result.exit_code == 0, result.output
    (request,) = api.requests
    assert request.url.params.get_list("status") == ["QUEUED", "SCHEDULED", "STARTING", "RUNNING"]
    assert request.url.params["limit"] == "50"
    lines = result.stdout.splitlines()
    running = next(line for line in lines if "j-1a2b3c" in line)
    queued = next(line for line in lines if "j-2" in line)
    assert "RUNNING" in running and "1x 2cpu 2.0GiB" in running and "started on local" in running
    assert "QUEUED" in queued and "0.5gpu" in queued and "no node has 4 free CPUs" in queued


def test_ps_all_sends_no_status_filter(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs", [job_body(status="FAILED", status_reason="exit_code: exited with code 3")])
    result = cli("ps", "--all", "--project", "vision", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert dict(api.requests[0].url.params) == {"limit": "5", "project": "vision"}
    assert "exit_code: exited with code 3" in result.stdout


def test_ps_status_filters_are_passed_through(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs", [])
    assert cli("ps", "--status", "FAILED", "--status", "STOPPED").exit_code == 0
    assert api.requests[0].url.params.get_list("status") == ["FAILED", "STOPPED"]


def test_describe_shows_pending_reason_attempts_and_history(api: FakeApi, cli: Invoke) -> None:
    body = detail_body(pending_reason=pending(position=2))
    body["attempt_list"][0]["replicas"][0].update(gpu_indices=[0, 1], oom_killed=True, exit_code=137)
    api.on("GET", "/jobs/train", body)
    result = cli("describe", "train")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "train (j-1a2b3c)  project=default  user=admin" in out
    assert "pending:  insufficient_resources: no node has 4 free CPUs; the most free on one node is 2 " \
           "(position 2 in queue)" in out
    assert "image:    busybox:latest" in out
    assert "request:  1 x (2 CPUs, 2.0GiB, 0 GPUs)  priority=0  retries left=0" in out
    assert "attained: 0 GPU-s  cohort=train-1" in out
    assert "attempt 1: RUNNING" in out
    assert "rank 0 on local gpus=[0, 1]: RUNNING exit=137 OOMKilled container=deepdock-j-1a2b3c-1-0" in out
    history = [line for line in out.splitlines() if "QUEUED" in line or "SCHEDULED" in line]
    assert "submitted" in history[0] and "placed on local" in history[1]


def test_describe_of_a_job_built_from_an_environment(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs/train", detail_body(image=None, cohort=None))
    result = cli("describe", "train")
    assert "image:    (environment, built at start)" in result.stdout and "cohort=-" in result.stdout
    assert "pending:" not in result.stdout


def test_logs_print_the_bytes_as_they_are(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs/j-1/logs", content=b"hello\n\x1b[1mbold\x1b[0m\n")
    result = cli("logs", "j-1", "--attempt", "2", "--rank", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"hello\n\x1b[1mbold\x1b[0m\n"
    assert dict(api.requests[0].url.params) == {"follow": "false", "rank": "1", "attempt": "2"}


def test_logs_follow_streams_each_attempt_until_the_job_ends(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs/j-1", detail_body(id="j-1", attempts=1))  # the command resolves the name to an id
    api.on("GET", "/jobs/j-1", detail_body(id="j-1", attempts=1))
    api.on("GET", "/jobs/j-1", detail_body(id="j-1", status="QUEUED", attempts=1))  # preempted: back in line
    api.on("GET", "/jobs/j-1", detail_body(id="j-1", status="RUNNING", attempts=2))
    api.on("GET", "/jobs/j-1", detail_body(id="j-1", status="SUCCEEDED", attempts=2))
    api.reply("GET", "/jobs/j-1/logs", lambda r: httpx.Response(200, content=f"attempt {r.url.params['attempt']}\n".encode()))
    result = cli("logs", "-f", "j-1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "attempt 1\nattempt 2\n"
    assert "-- attempt 2 --" in result.stderr
    follows = [dict(r.url.params) for r in api.sent("GET", "/jobs/j-1/logs")]
    assert follows == [{"follow": "true", "rank": "0", "attempt": "1"}, {"follow": "true", "rank": "0", "attempt": "2"}]


@pytest.mark.parametrize(("status", "said"), [("STOPPED", "stopped"), ("RUNNING", "stopping")])
def test_stop_says_whether_the_job_already_ended(api: FakeApi, cli: Invoke, status: str, said: str) -> None:
    api.on("POST", "/jobs/train/stop", job_body(status=status, stop_requested="user"))
    result = cli("stop", "train")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"job j-1a2b3c: {said}\n"


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "proj"
    code.mkdir()
    (code / "train.py").write_text("print('training')\n")
    return code


def _uploaded(api: FakeApi) -> list[str]:
    (upload,) = api.sent("POST", "/code")
    with tarfile.open(fileobj=io.BytesIO(upload.content), mode="r:gz") as tar:
        return sorted(tar.getnames())


def test_run_a_job_file_uploads_its_code_and_submits(api: FakeApi, cli: Invoke, code_dir: Path) -> None:
    job_file = code_dir / "job.yaml"
    job_file.write_text("name: t\nimage: busybox:latest\ncommand: [python, train.py]\ncode: .\n"
                        "resources: {cpus: 2, memory: 1g}\n")
    api.on("POST", "/code", {"sha256": SHA, "size": 100}, status=201)
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    result = cli("run", "-f", str(job_file))
    assert result.exit_code == 0, result.output
    assert result.stdout == "job j-1a2b3c (train) QUEUED\n"
    assert _uploaded(api) == ["job.yaml", "train.py"]
    body = api.json_sent("POST", "/jobs")
    assert body["code_sha256"] == SHA
    assert body["spec"]["command"] == ["python", "train.py"] and body["spec"]["code"] == str(code_dir)
    assert body["spec"]["resources"]["cpus"] == 2 and body["spec"]["resources"]["memory"] == 1024**3


def test_run_inline_builds_the_spec_from_options(api: FakeApi, cli: Invoke, code_dir: Path) -> None:
    api.on("POST", "/code", {"sha256": SHA, "size": 100}, status=201)
    api.on("POST", "/jobs", job_body(name="train-py", status="QUEUED"), status=201)
    result = cli("run", "--image", "busybox:latest", "--cpus", "2", "--memory", "1g", "--gpus", "0.25",
                 "--code", str(code_dir), "--project", "vision", "--priority", "5", "--", "train.py", "--lr", "0.1")
    assert result.exit_code == 0, result.output
    spec = api.json_sent("POST", "/jobs")["spec"]
    assert spec["name"] == "train-py" and spec["image"] == "busybox:latest"
    assert spec["command"] == ["train.py", "--lr", "0.1"]  # options after -- belong to the command
    assert spec["resources"]["cpus"] == 2 and spec["resources"]["memory"] == 1024**3 and spec["resources"]["gpus"] == 0.25
    assert (spec["project"], spec["priority"], spec["code"]) == ("vision", 5, str(code_dir))
    assert _uploaded(api) == ["train.py"]


def test_run_inline_needs_an_env_or_an_image(api: FakeApi, cli: Invoke) -> None:
    result = cli("run", "--", "python", "train.py")
    assert result.exit_code == 2
    assert "give --env ENV.yaml or --image IMAGE with an inline command" in result.output
    assert api.requests == []


def test_run_inline_with_a_bad_memory_is_a_usage_error(api: FakeApi, cli: Invoke) -> None:
    result = cli("run", "--image", "busybox", "--memory", "lots", "--", "true")
    assert result.exit_code == 2
    assert "--memory" in result.stderr and "cannot read size 'lots'" in result.stderr
    assert api.requests == []


def test_run_needs_a_file_or_a_command(api: FakeApi, cli: Invoke) -> None:
    result = cli("run")
    assert result.exit_code == 2 and "give -f JOB.yaml, or a command after --" in result.output


def test_run_with_a_bad_job_file_is_one_error_line(api: FakeApi, cli: Invoke, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: t\nimage: busybox\ncommand: [true]\nresourcez: {}\n")
    result = cli("run", "-f", str(job_file))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "resourcez" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize(("final", "code"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_run_follow_streams_logs_and_exits_with_the_jobs_outcome(api: FakeApi, cli: Invoke, tmp_path: Path,
                                                                 final: str, code: int) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: t\nimage: busybox:latest\ncommand: [echo, hi]\n")
    api.on("POST", "/jobs", job_body(id="j-9", status="QUEUED"), status=201)
    api.on("GET", "/jobs/j-9", detail_body(id="j-9", status="QUEUED", attempts=0))
    api.on("GET", "/jobs/j-9", detail_body(id="j-9", status="RUNNING", attempts=1))
    api.on("GET", "/jobs/j-9", detail_body(id="j-9", status=final, attempts=1))
    api.on("GET", "/jobs/j-9/logs", content=b"hi\n")
    result = cli("run", "-F", "-f", str(job_file))
    assert result.exit_code == code, result.output
    assert result.stdout == "job j-9 (train) QUEUED\nhi\n"


def test_the_spec_sent_by_run_is_valid_json(api: FakeApi, cli: Invoke, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: t\nimage: busybox:latest\ncommand: echo hi\nmax_runtime: 2h\n")
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    assert cli("run", "-f", str(job_file)).exit_code == 0
    (request,) = api.sent("POST", "/jobs")
    spec = json.loads(request.content)["spec"]
    assert spec["command"] == ["sh", "-c", "echo hi"] and spec["max_runtime"] == 7200
