"""The job spec's resources: ``gpu_memory`` is parsed, and refused without GPUs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepdock.errors import SpecError
from deepdock.specs.common import parse_model
from deepdock.specs.job import JobSpec, ResourcesSpec

GIB = 1024**3


def _spec(resources: dict) -> JobSpec:
    return parse_model(JobSpec, {"name": "j", "image": "busybox", "command": "true", "resources": resources}, "job.yaml")


def test_gpu_memory_parses_sizes() -> None:
    assert _spec({"gpus": 1, "gpu_memory": "40g"}).resources.gpu_memory == 40 * GIB
    assert _spec({"gpus": 0.5, "gpu_memory": 16 * GIB}).resources.gpu_memory == 16 * GIB
    assert _spec({"gpus": 2}).resources.gpu_memory is None


def test_gpu_memory_without_gpus_is_rejected() -> None:
    with pytest.raises(SpecError, match="gpu_memory .* asks for none; set gpus too"):
        _spec({"gpu_memory": "40g"})
    with pytest.raises(ValidationError, match="set gpus too"):
        ResourcesSpec(gpus=0, gpu_memory=40 * GIB)


def test_gpu_memory_must_be_positive() -> None:
    with pytest.raises(SpecError, match="gpu_memory must be positive"):
        _spec({"gpus": 1, "gpu_memory": 0})


def test_distributed_fields_are_checked_at_parse():
    base = {"name": "ddp", "image": "busybox:latest", "command": ["true"]}
    assert JobSpec.model_validate({**base, "network": "host", "replicas": 2}).network == "host"
    with pytest.raises(ValidationError, match="network"):
        JobSpec.model_validate({**base, "network": "overlay"})
    with pytest.raises(ValidationError, match="cannot share a fraction"):
        JobSpec.model_validate({**base, "resources": {"gpus": 0.5}, "processes_per_replica": 2})
    with pytest.raises(ValidationError, match="does not divide"):
        JobSpec.model_validate({**base, "resources": {"gpus": 4}, "processes_per_replica": 3})
    assert JobSpec.model_validate({**base, "progress_timeout": "10m"}).progress_timeout == 600
    with pytest.raises(ValidationError, match="LOCAL_RANK"):
        JobSpec.model_validate({**base, "env": {"LOCAL_RANK": "1"}})


def test_yaml_reads_on_and_yes_as_words_not_booleans(tmp_path):
    from deepdock.specs.job import load_job_spec

    path = tmp_path / "job.yaml"
    path.write_text("name: j\nimage: busybox:latest\ncommand: [echo, yes, on]\npreemptible: false\n"
                    "retry: {max_retries: 2, on: [failed, node_lost]}\nenv: {FLAG: off}\n")
    spec = load_job_spec(path)
    assert spec.retry.on == ["failed", "node_lost"] and spec.command == ["echo", "yes", "on"]
    assert spec.preemptible is False and spec.env == {"FLAG": "off"}
