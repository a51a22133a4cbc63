"""``deepdock run | ps | describe | logs | stop`` through the client against a scripted API."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from deepdock.cli import job as job_commands
from tests.cli.conftest import Invoke
from tests.cli.fakeapi import FakeApi, detail_body, job_body, paged, pending

SHA = "cd" * 32


def test_ps_lists_unfinished_jobs_with_why_a_queued_one_waits(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs", [job_body(status_reason="started on local"),
                            job_body(id="j-2", status="QUEUED", gpus=0.5, pending_reason=pending())])
    result = cli("ps")
    assert result.exit_code == 0, result.output
    (request,) = api.requests
    assert request.url.params.get_list("status") == ["QUEUED", "SCHEDULED", "STARTING", "RUNNING"]
    assert request.url.params["limit"] == "51"  # one more than shown tells whether there are more
    lines = result.stdout.splitlines()
    running = next(line for line in lines if "j-1a2b3c" in line)
    queued = next(line for line in lines if "j-2" in line)
    assert "RUNNING" in running and "1x 2cpu 2.0GiB" in running and "started on local" in running
    assert "QUEUED" in queued and "0.5gpu" in queued and "no node has 4 free CPUs" in queued


def test_ps_all_sends_no_status_filter(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/jobs", [job_body(status="FAILED", status_reason="exit_code: exited with code 3")])
    result = cli("ps", "--all", "--project", "vision", "--user", "carol", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert dict(api.requests[0].url.params) == {"limit": "6", "project": "vision", "user": "carol"}
    assert "exit_code: exited with code 3" in result.stdout
    assert "showing" not in result.stdout


def _jobs(n: int) -> list[dict[str, Any]]:
    return [job_body(id=f"j-{i:03d}", status="SUCCEEDED", submitted_at=1_700_000_000.0 - i) for i in range(n)]


def test_ps_says_when_it_shows_only_the_newest(api: FakeApi, cli: Invoke) -> None:
    api.reply("GET", "/jobs", paged(_jobs(8)))
    result = cli("ps", "--all", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert [r.url.params["limit"] for r in api.requests] == ["6"]
    shown = [line for line in result.stdout.splitlines() if "j-0" in line]
    assert len(shown) == 5 and "j-004" in shown[-1]
    assert result.stdout.splitlines()[-1] == ("showing the newest 5 jobs; there are more: --limit N for more, "
                                              "or --limit 0 for all")


def test_ps_with_exactly_the_limit_says_nothing_more(api: FakeApi, cli: Invoke) -> None:
    api.reply("GET", "/jobs", paged(_jobs(5)))
    result = cli("ps", "--all", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert sum("j-0" in line for line in result.stdout.splitlines()) == 5 and "showing" not in result.stdout


def test_ps_limit_0_lists_every_job_page_by_page(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_commands, "PS_PAGE_SIZE", 4)
    api.reply("GET", "/jobs", paged(_jobs(10)))
    result = cli("ps", "--all", "--limit", "0")
    assert result.exit_code == 0, result.output
    assert sorted(line.split()[1] for line in result.stdout.splitlines() if "j-0" in line) == \
        [f"j-{i:03d}" for i in range(10)]
    assert len(api.requests) > 1 and {r.url.params["limit"] for r in api.requests} == {"4"}
    assert "before" in api.requests[1].url.params and "showing" not in result.stdout


def test_ps_a_limit_above_one_page_pages_too(api: FakeApi, cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_commands, "PS_PAGE_SIZE", 4)
    api.reply("GET", "/jobs", paged(_jobs(10)))
    result = cli("ps", "--all", "--limit", "6")
    assert result.exit_code == 0, result.output
    assert sum("j-0" in line for line in result.stdout.splitlines()) == 6
    assert "showing the newest 6 jobs" in result.stdout


def test_ps_refuses_a_negative_limit(api: FakeApi, cli: Invoke) -> None:
    assert cli("ps", "--limit", "-1").exit_code == 2 and api.requests == []


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


def test_run_inline_leaves_secrets_out_and_names_them(api: FakeApi, cli: Invoke, code_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in (".ssh/id_ed25519", ".aws/credentials", ".env", ".config/settings.toml"):
        (code_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (code_dir / rel).write_text("secret")
    monkeypatch.chdir(code_dir)  # no --code: the current folder
    api.on("POST", "/code", {"sha256": SHA, "size": 100}, status=201)
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    result = cli("run", "--image", "busybox:latest", "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    assert _uploaded(api) == [".config/settings.toml", "train.py"]
    assert result.stderr == ("warning: left out of the code package (secrets): .aws/, .env, .ssh/ - "
                             "add `!.env` to .deepdockignore to include\n")
    assert result.stdout == "job j-1a2b3c (train) QUEUED\n"


def test_run_with_a_deepdockignore_re_including_a_secret_warns_of_the_rest(api: FakeApi, cli: Invoke,
                                                                           code_dir: Path) -> None:
    (code_dir / ".deepdockignore").write_text("!.env\n*.ckpt\n")
    for rel in (".env", ".netrc", "model.ckpt"):
        (code_dir / rel).write_text("x")
    api.on("POST", "/code", {"sha256": SHA, "size": 100}, status=201)
    api.on("POST", "/jobs", job_body(status="QUEUED"), status=201)
    result = cli("run", "--image", "busybox:latest", "--code", str(code_dir), "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    assert _uploaded(api) == [".deepdockignore", ".env", "train.py"]
    assert ".netrc" in result.stderr and ".env," not in result.stderr


@pytest.mark.parametrize("how", ["--code", "job file"])
def test_run_with_a_missing_code_folder_is_an_error_before_any_upload(api: FakeApi, cli: Invoke, tmp_path: Path,
                                                                      how: str) -> None:
    missing = tmp_path / "nope"
    if how == "--code":
        result = cli("run", "--image", "busybox:latest", "--code", str(missing), "--", "python", "train.py")
    else:
        job_file = tmp_path / "job.yaml"
        job_file.write_text("name: t\nimage: busybox:latest\ncommand: [python, train.py]\ncode: ./nope\n")
        result = cli("run", "-f", str(job_file))
    assert result.exit_code == 1
    assert result.stderr == f"error: code folder {missing} does not exist\n"
    assert api.requests == []


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
