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


def test_requirements_file_relative_to_spec_is_inlined(tmp_path):
    # Read from beside the spec at load, so the spec sent to a server needs no file of this machine.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "env.yaml").write_text("pip: [numpy==2.1.0]\nrequirements_file: req.txt\n")
    (tmp_path / "sub" / "req.txt").write_text("# pinned\nscikit-learn==1.5.2  # ml\n\nrich\n")
    spec = load_env_spec(tmp_path / "sub" / "env.yaml")
    assert spec.pip == ["numpy==2.1.0", "scikit-learn==1.5.2", "rich"]
    assert spec.requirements_file is None


def test_missing_requirements_file_names_the_resolved_path(tmp_path):
    (tmp_path / "env.yaml").write_text("requirements_file: nope.txt\n")
    with pytest.raises(SpecError, match=str((tmp_path / "nope.txt").resolve())):
        load_env_spec(tmp_path / "env.yaml")


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("pythn: '3.11'\n")
    with pytest.raises(SpecError, match="pythn: unknown field"):
        load_env_spec(path)
