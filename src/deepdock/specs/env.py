"""The environment spec: what software a job or a service needs, independent of where it runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from deepdock.errors import SpecError
from deepdock.specs.checks import ENV_KEY_RE, check_image_reference, check_text
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

    name: str | None = Field(None, max_length=128)
    python: str = "3.11"
    framework: FrameworkSpec = Field(default_factory=FrameworkSpec)
    accelerator: str = "auto"
    apt: list[str] = Field(default_factory=list, max_length=1000)
    pip: list[str] = Field(default_factory=list, max_length=5000)
    # A path on the machine that reads the spec. Jobs sent to a server carry its lines in ``pip``
    # instead (``inline_requirements``): the server never reads a path that a request names.
    requirements_file: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list, max_length=16)
    env: dict[str, str] = Field(default_factory=dict, max_length=512)
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

    @field_validator("pip")
    @classmethod
    def _pip_requirements(cls, v: list[str]) -> list[str]:
        for req in v:
            check_text(req, "a pip requirement", 4096)
            # One requirement per entry, never an option: pip's argv is built from these.
            if req.startswith("-") or any(c in req for c in "\n\r"):
                raise ValueError(f"{req!r} is not a requirement (options go in extra_index_urls; one per entry)")
        return v

    @field_validator("extra_index_urls")
    @classmethod
    def _index_urls(cls, v: list[str]) -> list[str]:
        # file:// is a local index for `deepdock env build`; the API refuses it (api/models.py SubmitJob).
        bad = [u for u in v if not re.match(r"^(https?|file)://[^\s]+$", u)]
        if bad:
            raise ValueError(f"not http(s) or file URLs: {', '.join(map(repr, bad))}")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_KEY_RE.match(key):
                raise ValueError(f"{key!r} is not a variable name: letters, digits and '_', not starting with a digit")
            check_text(value, f"the value of {key}", 32 * 1024)
        return v

    @field_validator("base_image")
    @classmethod
    def _base_image(cls, v: str | None) -> str | None:
        return None if v is None else check_image_reference(v)

    @model_validator(mode="after")
    def _framework_version(self) -> EnvSpec:
        if self.framework.name == "none" and self.framework.version:
            raise ValueError("framework.version given but framework.name is 'none'")
        return self

    @property
    def cuda_version(self) -> str | None:
        """The pinned CUDA version, or None for cpu / auto / unpinned 'cuda'."""
        return None if self.accelerator in ("cpu", "auto", "cuda") else self.accelerator


def read_requirements(path: str | Path) -> list[str]:
    """A requirements file's requirement lines (comments and blanks dropped; option lines refused)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"requirements_file {path}: cannot read ({exc.strerror})") from None
    reqs = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise SpecError(
                f"requirements_file {path}: option lines ({line.split()[0]}) are not supported; "
                "use extra_index_urls in the env spec"
            )
        reqs.append(line)
    return reqs


def inline_requirements(spec: EnvSpec) -> EnvSpec:
    """The same environment with its requirements file's lines in ``pip``: what a server is sent."""
    if not spec.requirements_file:
        return spec
    pip = list(spec.pip) + read_requirements(spec.requirements_file)
    return spec.model_copy(update={"pip": pip, "requirements_file": None})


def load_env_spec(path: str | Path) -> EnvSpec:
    """Load an env spec; a ``requirements_file`` (relative to the spec's folder) is read now and its
    lines put in ``pip``, so the spec is complete wherever it is sent."""
    spec = load_model(EnvSpec, path)
    if spec.requirements_file and not Path(spec.requirements_file).is_absolute():
        spec.requirements_file = str((Path(path).parent / spec.requirements_file).resolve())
    return inline_requirements(spec)
