"""Environments: EnvSpec → compatibility check → lock + wheelhouse → Dockerfile → content-addressed image.

Public API (used by the CLI and the job server)::

    from deepdock.envs import build_env, env_tag
    result = build_env(spec, offline=True, code_dir=Path("src"), progress=print)
    result.tag   # deepdock/code:<hash> with code, else deepdock/env:<hash>
"""

from deepdock.envs.build import BuildResult, EnvPlan, build_code, build_env, code_tree_hash, env_tag, plan_env

__all__ = ["BuildResult", "EnvPlan", "build_code", "build_env", "code_tree_hash", "env_tag", "plan_env"]
