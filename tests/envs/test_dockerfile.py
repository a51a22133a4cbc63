from __future__ import annotations

import re

from deepdock.envs.dockerfile import (
    DockerfilePlan,
    render_code_dockerfile,
    render_env_dockerfile,
    standard_labels,
    step_groups,
)


def plan(**kw) -> DockerfilePlan:
    defaults = dict(base_image="python:3.11-slim-bookworm", python="3.11", apt=["libgomp1", "curl"],
                    has_framework_wheels=True, has_deps_wheels=True, env={"OMP_NUM_THREADS": "2", "X": "a$b"},
                    labels=standard_labels("abc123", "python:3.11-slim-bookworm"),
                    framework_route="framework-f1", deps_route="deps-d1")
    defaults.update(kw)
    return DockerfilePlan(**defaults)


def system_onwards(text: str) -> str:
    return text[text.index("deepdock-step: system"):]


def test_no_buildkit_syntax():
    text = render_env_dockerfile(plan())
    assert "--mount" not in text and "<<" not in text and "# syntax" not in text
    assert not re.search(r"^(RUN|COPY) --(?!chown=)", text, re.M)


def test_one_stage_layer_order_base_system_framework_deps():
    text = render_env_dockerfile(plan())
    assert text.count("FROM ") == 1 and "--from=" not in text  # installed trees are written once
    rt = system_onwards(text)
    positions = [rt.index("apt-get install"), rt.index("useradd"), rt.index("-m venv /opt/venv"),
                 rt.index("COPY framework.lock"), rt.index("--find-links $DEEPDOCK_WHEELS/framework-f1/"),
                 rt.index("COPY deps.lock"), rt.index("--prefix /opt/deps --find-links $DEEPDOCK_WHEELS/deps-d1/"),
                 rt.index("LABEL ")]
    assert positions == sorted(positions)
    assert "apt-get install -y --no-install-recommends curl libgomp1" in rt  # sorted: stable cache key


def test_wheels_never_enter_a_layer():
    text = render_env_dockerfile(plan())
    assert ".whl" not in text and "/wheels" not in text
    installs = [ln for ln in text.splitlines() if "pip install" in ln]
    assert len(installs) == 2
    assert all("--no-index" in ln and "--require-hashes" in ln and " -r /opt/deepdock/" in ln for ln in installs)


def test_wheel_server_port_is_a_build_arg_declared_after_the_system_layers():
    text = render_env_dockerfile(plan())
    assert "127.0.0.1" not in text and "ARG DEEPDOCK_WHEELS" in text
    assert text.index("useradd") < text.index("ARG DEEPDOCK_WHEELS") < text.index("COPY framework.lock")


def test_devel_only_paths_are_stripped_in_the_install_layer():
    text = render_env_dockerfile(plan(strip_paths=["torch/share/cmake", "torch/include"]))
    framework_run = next(ln for ln in text.splitlines() if "framework-f1" in ln)
    assert framework_run.endswith("&& rm -rf /opt/venv/lib/python3.11/site-packages/torch/include "
                                  "/opt/venv/lib/python3.11/site-packages/torch/share/cmake")
    assert "torch/include" not in render_env_dockerfile(plan())


def test_labels_user_and_env():
    text = render_env_dockerfile(plan())
    assert 'deepdock.managed="true"' in text and 'deepdock.env.lock="abc123"' in text
    assert "deepdock.version=" in text
    assert "USER 1000:1000" in text and "useradd --create-home --uid 1000" in text
    assert 'ENV OMP_NUM_THREADS="2"' in text
    assert 'ENV X="a\\$b"' in text  # the builder must not expand the user's $


def test_deps_prefix_is_on_the_venv_path():
    text = render_env_dockerfile(plan())
    assert "/opt/deps/lib/python3.11/site-packages > /opt/venv/lib/python3.11/site-packages/deepdock-deps.pth" in text


def test_empty_groups_render_without_globs():
    text = render_env_dockerfile(plan(has_framework_wheels=False, has_deps_wheels=False, apt=[]))
    assert "*.whl" not in text and "apt-get" not in text
    assert "RUN mkdir -p /opt/deps/lib/python3.11/site-packages" in text


def test_devel_base_installs_python_first():
    text = render_env_dockerfile(plan(base_image="nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04", python="3.12",
                                      base_needs_python=True))
    base_part = text[: text.index("deepdock-step: system")]
    assert "python3-venv" in base_part


def test_rendering_is_deterministic():
    assert render_env_dockerfile(plan()) == render_env_dockerfile(plan())


def test_step_groups_follow_instructions():
    text = render_env_dockerfile(plan())
    groups = step_groups(text)
    instructions = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(groups) == len(instructions)
    by_instruction = dict(zip(instructions, groups, strict=True))
    assert by_instruction["COPY framework.lock /opt/deepdock/framework.lock"] == "framework"
    assert by_instruction["COPY deps.lock /opt/deepdock/deps.lock"] == "deps"
    assert [g for i, g in by_instruction.items() if "apt-get" in i] == ["system"]
    assert [g for i, g in by_instruction.items() if "--prefix /opt/deps" in i] == ["deps"]


def test_code_dockerfile():
    text = render_code_dockerfile("deepdock/env:abc", "f00")
    assert text.splitlines()[2] == "FROM deepdock/env:abc"
    assert "COPY --chown=1000:1000 code /workspace" in text
    assert step_groups(text)[:2] == ["code", "code"]
