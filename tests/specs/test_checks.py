"""Submit-time checks: what would only fail later on an engine (or overflow a column) is refused with the
field's name. The API runs the same models, so these hold for the CLI and the REST API alike."""

import json
import math

import pytest
from pydantic import ValidationError

from deepdock.api.models import QuotaIn, SubmitJob
from deepdock.specs.checks import check_image_reference
from deepdock.specs.env import EnvSpec
from deepdock.specs.job import JobSpec

BASE = {"name": "x", "image": "busybox:1.36", "command": ["true"]}


def refused(field: str, **changes: object) -> str:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**BASE, **changes})
    errors = info.value.errors()
    assert any(".".join(map(str, e["loc"])).startswith(field) for e in errors), errors
    return str(info.value)


@pytest.mark.parametrize("field,changes", [
    ("stop_grace", {"stop_grace": math.inf}),
    ("stop_grace", {"stop_grace": 7200}),
    ("max_runtime", {"max_runtime": math.nan}),
    ("max_runtime", {"max_runtime": "400d"}),
    ("runtime_estimate", {"runtime_estimate": -1}),
    ("resources.memory", {"resources": {"memory": 1e400}}),
    ("resources.memory", {"resources": {"memory": 10**30}}),
    ("resources.memory", {"resources": {"memory": "999999999t"}}),
    ("resources.cpus", {"resources": {"cpus": math.nan}}),
    ("resources.shm_size", {"resources": {"shm_size": math.inf}}),
    ("resources.gpu_memory", {"resources": {"gpus": 1, "gpu_memory": 2**60}}),
])
def test_numbers_are_finite_and_bounded(field, changes):
    refused(field, **changes)


@pytest.mark.parametrize("env,needle", [
    ({"A=B": "x"}, "not a variable name"),
    ({"1A": "x"}, "not a variable name"),
    ({"A": "x\x00y"}, "NUL"),
    ({"A": "x" * 40_000}, "longer than"),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, "set by deepdock"),
    ({"DEEPDOCK_JOB_ID": "other"}, "set by deepdock"),
])
def test_env_keys_and_values(env, needle):
    assert needle in refused("env", env=env)


@pytest.mark.parametrize("workdir", ["workspace", "/", "/a/../b", "/a/", "//a", "/proc/x", "/dev", "/a\x00"])
def test_workdir_is_an_absolute_normal_path(workdir):
    refused("workdir", workdir=workdir)


@pytest.mark.parametrize("image", ["Bad Image", "UPPER/case", "a:b:c", "x@sha256:1234", "", ":tag", "a" * 300])
def test_malformed_image_references(image):
    refused("image", image=image)


@pytest.mark.parametrize("image", ["busybox", "python:3.11-slim-bookworm", "deepdock/env:2be884112cc6d4dbb46278f4",
                                   "localhost:5000/team/trainer:1.2", "ghcr.io/org/img@sha256:" + "a" * 64])
def test_valid_image_references(image):
    assert check_image_reference(image) == image


def test_command_arguments_without_nul():
    refused("command", command=["echo", "a\x00b"])


@pytest.mark.parametrize("volume,field", [
    ({"source": "/data/../etc", "target": "/d"}, "volumes.0.source"),
    ({"source": "Bad Name", "target": "/d"}, "volumes.0.source"),
    ({"source": "cache", "target": "d"}, "volumes.0.target"),
    ({"source": "cache", "target": "/"}, "volumes.0.target"),
    ({"source": "cache", "target": "/proc"}, "volumes.0.target"),
])
def test_volume_sources_and_targets(volume, field):
    refused(field, volumes=[volume])


def test_volume_targets_are_distinct_and_not_the_workdir():
    assert "share a target" in refused("", volumes=[{"source": "a", "target": "/d"}, {"source": "b", "target": "/d"}])
    assert "workdir" in refused("", volumes=[{"source": "a", "target": "/workspace"}])


def test_the_api_refuses_an_environment_path():
    body = {"spec": {**BASE, "image": None, "environment": "/etc/passwd"}}
    with pytest.raises(ValidationError, match="does not read files"):
        SubmitJob.model_validate(body)
    body = {"spec": {**BASE, "image": None, "environment": {"requirements_file": "/etc/shadow"}}}
    with pytest.raises(ValidationError, match="cannot read"):
        SubmitJob.model_validate(body)
    body = {"spec": {**BASE, "image": None, "environment": {"extra_index_urls": ["file:///etc"]}}}
    with pytest.raises(ValidationError, match="folder of the server"):
        SubmitJob.model_validate(body)


def test_json_nan_and_infinity_are_refused():
    text = json.dumps({"spec": {**BASE, "stop_grace": math.inf}})
    assert "Infinity" in text
    with pytest.raises(ValidationError):
        SubmitJob.model_validate_json(text)


@pytest.mark.parametrize("quota", [{"cpus": -1}, {"gpus": math.inf}, {"memory": 2**70}, {"cpus": math.nan}])
def test_quotas_are_non_negative_and_bounded(quota):
    with pytest.raises(ValidationError):
        QuotaIn.model_validate(quota)


@pytest.mark.parametrize("env", [{"pip": ["--index-url=http://x"]}, {"pip": ["a\nb"]}, {"env": {"A\nRUN": "x"}},
                                 {"extra_index_urls": ["ftp://x/simple"]}, {"base_image": "Not An Image"}])
def test_env_spec_strings_cannot_reach_pip_options_or_the_dockerfile(env):
    with pytest.raises(ValidationError):
        EnvSpec.model_validate(env)
