"""``deepdock user add`` and ``deepdock project ls | quota``."""

from __future__ import annotations

from tests.cli.conftest import Invoke
from tests.cli.fakeapi import FakeApi, project_body


def test_user_add_prints_the_token_once(api: FakeApi, cli: Invoke) -> None:
    api.on("POST", "/users", {"name": "ann", "is_admin": True, "token": "tok-ann"}, status=201)
    result = cli("user", "add", "ann", "--project", "vision", "--project", "nlp", "--admin")
    assert result.exit_code == 0, result.output
    assert result.stdout == "user ann created; token (shown once): tok-ann\n"
    assert api.json_sent("POST", "/users") == {"name": "ann", "is_admin": True, "projects": ["vision", "nlp"]}


def test_user_add_by_a_non_admin_is_refused(api: FakeApi, cli: Invoke) -> None:
    api.error("POST", "/users", 403, "forbidden", "only an admin may create users")
    result = cli("user", "add", "bob")
    assert result.exit_code == 1 and result.stderr == "error: only an admin may create users\n"
    assert api.json_sent("POST", "/users") == {"name": "bob", "is_admin": False, "projects": []}


def test_project_ls_shows_quotas(api: FakeApi, cli: Invoke) -> None:
    api.on("GET", "/projects", [project_body(),
                                project_body(name="vision", quota_cpus=8.0, quota_memory=16 * 1024**3, quota_gpus=2.0)])
    result = cli("project", "ls")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in result.stdout.splitlines() if line.startswith("│")}
    assert rows == {"default": ["-", "-", "-"], "vision": ["8.0", "16.0GiB", "2.0"]}


def test_project_quota_parses_memory_and_sends_only_what_is_given(api: FakeApi, cli: Invoke) -> None:
    api.on("PUT", "/projects/vision/quota", project_body(name="vision", quota_cpus=4.0, quota_memory=8 * 1024**3))
    result = cli("project", "quota", "vision", "--cpus", "4", "--memory", "8g")
    assert result.exit_code == 0, result.output
    assert result.stdout == "project vision: quota set\n"
    assert api.json_sent("PUT", "/projects/vision/quota") == {"cpus": 4.0, "memory": 8 * 1024**3, "gpus": None}


def test_project_quota_with_bad_memory_is_a_usage_error_and_sends_nothing(api: FakeApi, cli: Invoke) -> None:
    result = cli("project", "quota", "vision", "--memory", "lots")
    assert result.exit_code == 2
    assert "--memory" in result.stderr and "cannot read size 'lots'" in result.stderr
    assert api.requests == []
