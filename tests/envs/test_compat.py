from __future__ import annotations

import pytest

from deepdock.envs import compat_regen
from deepdock.envs.compat import framework_versions, manylinux_platforms, resolve
from deepdock.errors import SpecError
from deepdock.specs.env import EnvSpec


def spec(**kw) -> EnvSpec:
    return EnvSpec.model_validate(kw)


def test_torch_cpu_uses_cpu_wheel_and_slim_base():
    r = resolve(spec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu"),
                pytorch_index_url="https://download.pytorch.org/whl")
    assert r.framework_requirements == ["torch==2.13.0+cpu"]
    assert r.index_urls == ["https://download.pytorch.org/whl/cpu"]
    assert r.base_image == "python:3.11-slim-bookworm"
    assert r.cuda is None and r.accelerator == "cpu"


def test_empty_pytorch_index_disables_the_index():
    r = resolve(spec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu"), pytorch_index_url="")
    assert r.index_urls == []


def test_auto_means_newest_cuda_on_the_slim_base():
    r = resolve(spec(framework={"name": "torch", "version": "2.13.0"}), pytorch_index_url="https://x/whl")
    assert (r.accelerator, r.cuda, r.cudnn) == ("cuda", "13.0", "9.13")
    assert r.framework_requirements == ["torch==2.13.0+cu130"]
    assert r.index_urls == ["https://x/whl/cu130"]
    assert r.base_image == "python:3.11-slim-bookworm"  # wheels bring CUDA; no nvidia/cuda base


def test_auto_without_framework_is_cpu():
    r = resolve(spec())
    assert r.accelerator == "cpu" and r.framework_requirements == []


def test_unpinned_framework_is_newest_release():
    assert resolve(spec(framework={"name": "torch"}, accelerator="cpu")).framework_version == "2.14.1"
    assert framework_versions("torch")[-1] == "2.14.1"


def test_impossible_cuda_names_the_valid_choices():
    with pytest.raises(SpecError) as exc:
        resolve(spec(framework={"name": "torch", "version": "2.13.0"}, accelerator="11.8"))
    assert "torch 2.13.0 supports CUDA 12.6, 12.8, 13.0; python 3.10-3.14" in exc.value.message


def test_impossible_python_names_the_range():
    with pytest.raises(SpecError, match=r"does not support python 3.12: tensorflow 2.15.1 .*python 3.9-3.11"):
        resolve(spec(python="3.12", framework={"name": "tensorflow", "version": "2.15.1"}))


def test_unknown_release_lists_known_ones():
    with pytest.raises(SpecError, match=r"torch 1.13.1 is not in the compatibility table; known releases: .*2.13.0"):
        resolve(spec(framework={"name": "torch", "version": "1.13.1"}))


def test_cuda_without_framework_is_an_error():
    with pytest.raises(SpecError, match="needs a framework with CUDA builds"):
        resolve(spec(accelerator="cuda"))


def test_tensorflow_and_jax_requirements():
    tf = resolve(spec(framework={"name": "tensorflow", "version": "2.20.0"}))
    assert tf.framework_requirements == ["tensorflow[and-cuda]==2.20.0"] and tf.cuda == "12.5"
    jax = resolve(spec(framework={"name": "jax", "version": "0.7.2"}, accelerator="12.9"))
    assert jax.framework_requirements == ["jax[cuda12]==0.7.2"]
    assert resolve(spec(framework={"name": "jax", "version": "0.7.2"}, accelerator="cpu")
                   ).framework_requirements == ["jax==0.7.2"]


def test_cuda_devel_selects_nvidia_devel_and_checks_ubuntu_python():
    r = resolve(spec(python="3.12", framework={"name": "torch", "version": "2.13.0"}, accelerator="12.8",
                     cuda_devel=True))
    assert r.base_image == "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04" and r.base_needs_python
    with pytest.raises(SpecError, match="whose python is 3.12"):
        resolve(spec(framework={"name": "torch", "version": "2.13.0"}, accelerator="12.8", cuda_devel=True))
    with pytest.raises(SpecError, match="cuda_devel: true needs a CUDA accelerator"):
        resolve(spec(framework={"name": "torch", "version": "2.13.0"}, accelerator="cpu", cuda_devel=True))


def test_base_image_override_and_trixie_for_313():
    assert resolve(spec(base_image="my/base:1")).base_image == "my/base:1"
    assert resolve(spec(python="3.13")).base_image == "python:3.13-slim-trixie"
    with pytest.raises(SpecError, match="python 3.7 has no base image"):
        resolve(spec(python="3.7"))


def test_manylinux_platforms_cover_older_tags():
    tags = manylinux_platforms("2.36")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux2014_x86_64" in tags


def test_committed_table_is_regenerated_from_source(capsys):
    assert compat_regen.main([]) == 0, capsys.readouterr().err


def test_regen_rejects_bad_rows(tmp_path):
    src = tmp_path / "src.csv"
    src.write_text("framework,version,python,cuda,released\ntorch,2.13.0,3.10-3.14,12.8-9.1,2026-07\n")
    with pytest.raises(compat_regen.CompatSourceError, match="cuda builds must look like"):
        compat_regen.regenerate(src)
    src.write_text("framework,version,python,cuda,released\nmxnet,1.9.1,3.8-3.10,-,2022-05\n")
    assert compat_regen.main(["--source", str(src), "--table", str(tmp_path / "t.yaml")]) == 2
    src.write_text("framework,version,python,cuda,released\njax,0.7.2,3.11-3.13,12.9/9.12,2025-09\n")
    table = tmp_path / "t.yaml"
    assert compat_regen.main(["--source", str(src), "--table", str(table)]) == 1  # missing = stale
    assert compat_regen.main(["--write", "--source", str(src), "--table", str(table)]) == 0
    assert compat_regen.main(["--source", str(src), "--table", str(table)]) == 0
