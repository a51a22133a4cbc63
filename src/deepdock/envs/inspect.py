"""Where an image's bytes are: size per layer group (base / system / framework / deps / code)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from deepdock.envs.dockerfile import DEPS_PREFIX, LOCK_DIR, LOCK_FILE, VENV, WORKDIR, group_lock_name
from deepdock.errors import NotFoundError

GROUP_ORDER = ("base", "system", "framework", "deps", "code", "metadata")
MANAGED_LABEL = "deepdock.managed"
_COPY_DEST_RE = re.compile(r"#\(nop\)\s+(?:COPY|ADD) \S+ in (\S+)\s*$")
_DEST_GROUPS = {VENV: "framework", DEPS_PREFIX: "deps", LOCK_FILE: "deps", WORKDIR: "code",
                f"{LOCK_DIR}/{group_lock_name('framework')}": "framework",
                f"{LOCK_DIR}/{group_lock_name('deps')}": "deps"}


@dataclass(frozen=True)
class LayerGroup:
    name: str
    size_bytes: int
    layers: int


def _group_of(created_by: str) -> str:
    """The group of one history entry of the runtime stage (see dockerfile.render_env_dockerfile)."""
    if "#(nop)" not in created_by:
        # RUN steps: the deps install (or its empty prefix), the venv + framework install, else system.
        if f"--prefix {DEPS_PREFIX}" in created_by or f"mkdir -p {DEPS_PREFIX}" in created_by:
            return "deps"
        if f"-m venv {VENV}" in created_by or f"{VENV}/bin/pip" in created_by:
            return "framework"
        return "system"  # apt packages, the user
    copy = _COPY_DEST_RE.search(created_by)
    if copy is None:
        return "metadata"  # ENV, LABEL, USER, WORKDIR, CMD: no bytes
    return _DEST_GROUPS.get(copy.group(1), "system")


def layer_groups(client: Any, ref: str) -> list[LayerGroup]:
    import docker

    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise NotFoundError(f"no image {ref}") from None
    history = list(reversed(image.history()))  # oldest first
    base_layers = 0
    base_ref = image.labels.get("deepdock.env.base", "")
    try:
        if base_ref:
            base_layers = len(client.images.get(base_ref).history())
    except docker.errors.ImageNotFound:
        base_layers = 0
    if not base_layers:
        # Without the base at hand: everything before the first RUN/COPY of our runtime stage is base.
        for i, entry in enumerate(history):
            if "useradd" in entry.get("CreatedBy", "") or "apt-get" in entry.get("CreatedBy", ""):
                base_layers = i
                break
    sizes: dict[str, list[int]] = {}
    for i, entry in enumerate(history):
        group = "base" if i < base_layers else _group_of(entry.get("CreatedBy", ""))
        sizes.setdefault(group, []).append(int(entry.get("Size", 0)))
    return [LayerGroup(g, sum(sizes[g]), len(sizes[g])) for g in GROUP_ORDER if g in sizes]


def managed_images(client: Any) -> list[Any]:
    """Every deepdock-built image (env and code), newest first."""
    images = client.images.list(filters={"label": f"{MANAGED_LABEL}=true"})
    return sorted(images, key=lambda im: im.attrs.get("Created", ""), reverse=True)
