"""The environment spec: what software a job or a service needs, independent of where it runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from deepdock.specs.common import StrictModel, load_model

_CUDA_RE = re.compile(r"^(?:cuda[-:]?)?(\d+\.\d+)$")
_PY_RE = re.compile(r"^3\.\d+$")


class FrameworkSpec(StrictModel):
    name: Literal["torch", "tensorflow", "jax", "none"] = "none"
    # Exact release ("2.13.0"); None = the newest in the compatibility table.
    version: str | None = None


class EnvSpec(StrictModel):
    """An environment. YAML example::

        python: "3.11"
        framework: {name: torch, version: "2.13.0"}
        accelerator: cpu          # cpu | auto | a CUDA version such as "12.4" or "cuda12.4"
        apt: [libgomp1]
        pip: [scikit-learn==1.5.2]
        requirements_file: requirements.txt   # relative to the spec file
        extra_index_urls: []
        env: {OMP_NUM_THREADS: "2"}
        base_image: null          # override the base chosen from the compatibility table
    """

    name: str | None = None
    python: str = "3.11"
    framework: FrameworkSpec = Field(default_factory=FrameworkSpec)
    accelerator: str = "auto"
    apt: list[str] = Field(default_factory=list)
    pip: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    base_image: str | None = None
    # Build on a CUDA *devel* base (nvcc, headers) so that CUDA extensions can be compiled at build time.
    cuda_devel: bool = False

    @field_validator("python")
    @classmethod
    def _python_version(cls, v: str) -> str:
        if not _PY_RE.match(v):
            raise ValueError(f"python must look like '3.11', got {v!r}")
        return v

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        v = v.strip().lower()
        if v in ("cpu", "auto", "cuda"):
            return v
        match = _CUDA_RE.match(v)
        if not match:
            raise ValueError(f"accelerator must be 'cpu', 'auto', 'cuda' or a CUDA version like '12.4', got {v!r}")
        return match.group(1)

    @field_validator("apt")
    @classmethod
    def _apt_names(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not re.match(r"^[a-z0-9][a-z0-9+.\-]*(=[A-Za-z0-9.+~:\-]+)?$", p)]
        if bad:
            raise ValueError(f"not valid Debian package names: {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _framework_version(self) -> EnvSpec:
        if self.framework.name == "none" and self.framework.version:
            raise ValueError("framework.version given but framework.name is 'none'")
        return self

    @property
    def cuda_version(self) -> str | None:
        """The pinned CUDA version, or None for cpu / auto / unpinned 'cuda'."""
        return None if self.accelerator in ("cpu", "auto", "cuda") else self.accelerator


def load_env_spec(path: str | Path) -> EnvSpec:
    """Load an env spec; a relative ``requirements_file`` is resolved against the spec's folder."""
    spec = load_model(EnvSpec, path)
    if spec.requirements_file and not Path(spec.requirements_file).is_absolute():
        spec.requirements_file = str((Path(path).parent / spec.requirements_file).resolve())
    return spec
