"""Environments: EnvSpec → compatibility check → lock + wheelhouse → Dockerfile → content-addressed image.

Public API (used by the CLI and, through ``compute.docker``, by the job server)::

    from deepdock.envs import build_env, env_tag
    result = build_env(spec, offline=True, code_dir=Path("src"), progress=print)
    result.tag   # deepdock/code:<hash> with code, else deepdock/env:<hash>

plus what ``deepdock env`` and ``deepdock base`` show: ``plan_env``, ``render_code_dockerfile``,
``managed_images``, ``layer_groups``, ``bootstrap_base`` and ``connect`` (the builder's engine client).
"""

from deepdock.envs.base import bootstrap_base
from deepdock.envs.build import BuildResult, EnvPlan, build_code, build_env, code_tree_hash, env_tag, plan_env
from deepdock.envs.docker_api import connect
from deepdock.envs.dockerfile import render_code_dockerfile
from deepdock.envs.inspect import layer_groups, managed_images

__all__ = [
    "BuildResult", "EnvPlan", "bootstrap_base", "build_code", "build_env", "code_tree_hash", "connect", "env_tag",
    "layer_groups", "managed_images", "plan_env", "render_code_dockerfile",
]
