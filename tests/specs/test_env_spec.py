from __future__ import annotations

import pytest

from deepdock.errors import SpecError
from deepdock.specs.env import EnvSpec, load_env_spec


def test_defaults():
    spec = EnvSpec()
    assert (spec.python, spec.framework.name, spec.accelerator, spec.cuda_devel) == ("3.11", "none", "auto", False)


@pytest.mark.parametrize(("given", "expected"), [("cpu", "cpu"), ("AUTO", "auto"), ("cuda12.8", "12.8"),
                                                 ("cuda:13.0", "13.0"), ("12.6", "12.6")])
def test_accelerator_forms(given, expected):
    spec = EnvSpec(accelerator=given)
    assert spec.accelerator == expected
    assert spec.cuda_version == (None if expected in ("cpu", "auto") else expected)


@pytest.mark.parametrize("bad", [{"python": "3"}, {"accelerator": "rocm"}, {"apt": ["Bad Name"]},
                                 {"framework": {"name": "none", "version": "1.0"}}, {"framework": {"name": "mxnet"}},
                                 {"unknown_field": 1}])
def test_invalid_specs(bad, tmp_path):
    import yaml

    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SpecError):
        load_env_spec(path)


def test_requirements_file_relative_to_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "env.yaml").write_text("requirements_file: req.txt\n")
    spec = load_env_spec(tmp_path / "sub" / "env.yaml")
    assert spec.requirements_file == str((tmp_path / "sub" / "req.txt").resolve())


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("pythn: '3.11'\n")
    with pytest.raises(SpecError, match="pythn: unknown field"):
        load_env_spec(path)
