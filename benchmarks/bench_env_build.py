"""Environment build benchmark: deepdock's layered build vs the naive single-stage Dockerfile.

    .venv/bin/python benchmarks/bench_env_build.py [--json out.json]

Needs a Docker engine on this host (builds fetch wheels from 127.0.0.1)
and the host's pip config to provide torch 2.13.0+cpu (find-links). Measures, in
one run, on the same offline (Debian-bootstrapped) python 3.11 base and from the same wheels:
  * cold offline build (empty deepdock cache, --no-cache layers, base present), goal <= 90 s
  * code-only rebuild, goal <= 2 s, vs the naive style (COPY . . then pip install) after a code change
  * image size, goal <= 1.0 GB, vs the naive image
  * reproducibility: a second build from another empty cache gives the same tag
Every image it builds carries the label deepdock.bench=env-build and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

BENCH_LABEL = {"deepdock.bench": "env-build"}
PYTHON = "3.11"
TORCH = "2.13.0"
NAIVE_TAG = "deepdock-bench/naive:latest"
NAIVE_DOCKERFILE = (
    "FROM python:3.11-slim-bookworm\n"
    "WORKDIR /app\n"
    "COPY . .\n"
    # The Debian-based offline base has no system pip (and PEP 668 forbids it): a venv, like users do.
    "RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir --no-index --find-links /app/wheels "
    "torch==2.13.0+cpu numpy\n"
    'CMD ["/venv/bin/python", "train.py"]\n'
)


def _fresh_home(root: Path, name: str) -> None:
    from deepdock.settings import get_settings

    os.environ["DEEPDOCK_HOME"] = str(root / name)
    get_settings.cache_clear()


def _naive_build(client, ctx: Path) -> float:
    from deepdock.envs import docker_api

    started = time.monotonic()
    docker_api.run_build(client, tag=NAIVE_TAG, groups=[], path=str(ctx), labels=BENCH_LABEL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ["DEEPDOCK_PYTORCH_INDEX_URL"] = ""  # this host's pip find-links provides torch

    from deepdock.envs import docker_api
    from deepdock.envs.base import bootstrap_base, offline_image_name
    from deepdock.envs.build import build_env
    from deepdock.specs.env import EnvSpec

    client = docker_api.connect()
    base = offline_image_name(PYTHON)
    if not docker_api.image_exists(client, base):
        from deepdock.settings import get_settings

        bootstrap_base(client, PYTHON, progress=print, mirror=get_settings().debian_mirror)
    spec = EnvSpec(python=PYTHON, framework={"name": "torch", "version": TORCH}, accelerator="cpu", pip=["numpy"])
    work = Path(tempfile.mkdtemp(prefix="deepdock-bench-"))
    code = work / "code"
    code.mkdir()
    (code / "train.py").write_text("import torch\nprint(torch.ones(2).sum())\n")
    results: dict[str, float | str | bool] = {}
    try:
        # 1. cold: empty lock/wheel cache, no layer cache, base present.
        _fresh_home(work, "home-a")
        cold = build_env(spec, docker_client=client, offline=True, no_cache=True, labels=BENCH_LABEL)
        results["cold_build_s"] = round(cold.duration_s, 1)
        results["env_tag"] = cold.tag
        results["env_image_bytes"] = client.images.get(cold.tag).attrs["Size"]

        # 2. reproducibility: another empty cache, same spec.
        _fresh_home(work, "home-b")
        again = build_env(spec, docker_client=client, offline=True, labels=BENCH_LABEL)
        results["second_empty_cache_tag"] = again.tag
        results["reproducible"] = again.tag == cold.tag

        # 3. code-only rebuild.
        build_env(spec, docker_client=client, code_dir=code, labels=BENCH_LABEL)
        (code / "train.py").write_text("import torch\nprint(torch.ones(3).sum())\n")
        code_v2 = build_env(spec, docker_client=client, code_dir=code, labels=BENCH_LABEL)
        results["code_rebuild_s"] = round(code_v2.duration_s, 2)
        results["code_image_bytes"] = client.images.get(code_v2.tag).attrs["Size"]

        # 4. naive: COPY . . (code + the same wheelhouse) then pip install, same base.
        from deepdock.envs.build import plan_env

        plan = plan_env(spec)
        from deepdock.envs.lock import LockStore
        from deepdock.settings import get_settings

        house = LockStore(get_settings().cache_dir).wheelhouse(plan.lock)
        ctx = work / "naive"
        shutil.copytree(code, ctx)
        (ctx / "wheels").mkdir()
        for group, wheel in plan.lock.wheels():
            os.link(house / group / wheel.filename, ctx / "wheels" / wheel.filename)
        (ctx / "Dockerfile").write_text(NAIVE_DOCKERFILE)
        results["naive_cold_build_s"] = round(_naive_build(client, ctx), 1)
        (ctx / "train.py").write_text("import torch\nprint(torch.ones(4).sum())\n")
        results["naive_code_rebuild_s"] = round(_naive_build(client, ctx), 1)
        results["naive_image_bytes"] = client.images.get(NAIVE_TAG).attrs["Size"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for image in client.images.list(filters={"label": "deepdock.bench=env-build"}):
            try:
                client.images.remove(image.id, force=True)
            except Exception:  # noqa: BLE001 - already gone with a child image
                pass
    results["code_rebuild_speedup_x"] = round(float(results["naive_code_rebuild_s"]) / float(results["code_rebuild_s"]), 1)
    results["size_ratio_naive_over_ours"] = round(
        int(results["naive_image_bytes"]) / int(results["env_image_bytes"]), 2)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
