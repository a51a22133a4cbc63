"""The service spec: strict, with durations and sizes as a job's, and a clear error for each bad field."""

from __future__ import annotations

import pytest

from deepdock.errors import SpecError
from deepdock.specs.common import parse_model
from deepdock.specs.service import ServiceSpec, load_service_spec, revision_fields


def test_a_full_spec_from_yaml(tmp_path):
    path = tmp_path / "svc.yaml"
    path.write_text("""
name: digits
model: digits-mlp@production
runtime: onnx
resources: {cpus: 2, memory: 512m}
autoscaling: {min: 1, max: 6, target_concurrency: 8, cooldown: 2m}
batching: {max_batch_size: 16, max_wait_ms: 1}
rollout:
  max_surge: 2
  canary: {steps: [10, 50], interval: 1m}
  slo: {max_error_rate: 0.02, max_p99_ms: 250}
""")
    spec = load_service_spec(path)
    assert (spec.model_name, spec.alias, spec.pinned_version) == ("digits-mlp", "production", None)
    assert spec.resources.memory == 512 * 1024**2 and spec.autoscaling is not None
    assert spec.autoscaling.cooldown == 120 and spec.rollout.canary is not None and spec.rollout.canary.interval == 60
    assert not spec.preemptible


@pytest.mark.parametrize(("doc", "message"), [
    ({"model": "m:1", "replicas": 2, "colour": "red"}, "colour"),
    ({"name": "Digits"}, "URL segment"),
    ({"model": "m"}, "NAME:VERSION or NAME@ALIAS"),
    ({"runtime": "tensorflow"}, "unknown runtime"),
    ({"autoscaling": {"min": 3, "max": 2, "target_rps": 5}}, "above max"),
    ({"autoscaling": {"max": 2}}, "exactly one of target_concurrency"),
    ({"rollout": {"max_surge": 0, "max_unavailable": 0}}, "could never move"),
    ({"rollout": {"canary": {"steps": [50, 10]}}}, "increasing percentages"),
    ({"rollout": {"canary": {"steps": [100]}}}, "increasing percentages"),
])
def test_bad_fields_are_named(doc, message):
    full = {"name": "digits", "model": "digits-mlp:1", **doc}
    with pytest.raises(SpecError, match=message):
        parse_model(ServiceSpec, full, "svc.yaml")


def test_revision_fields_change_with_what_a_replica_runs_only():
    a = ServiceSpec(name="d", model="m:1")
    b = ServiceSpec.model_validate({"name": "d", "model": "m:1", "replicas": 5, "rollout": {"max_surge": 3}})
    c = ServiceSpec.model_validate({"name": "d", "model": "m:1", "batching": {"max_batch_size": 8}})
    assert revision_fields(a, 1, "onnx") == revision_fields(b, 1, "onnx")
    assert revision_fields(a, 1, "onnx") != revision_fields(c, 1, "onnx")
    assert revision_fields(a, 1, "onnx") != revision_fields(a, 2, "onnx")
