"""Shared pieces of the user-facing specs: strict models, size and duration parsing, YAML loading."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from deepdock.errors import SpecError

M = TypeVar("M", bound=BaseModel)

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


class StrictModel(BaseModel):
    """Base of every spec: unknown fields are an error, not silently ignored; NaN and infinities are
    refused (JSON cannot store them, and ``stop_grace: Infinity`` would make a job unstoppable)."""

    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True, allow_inf_nan=False)


def parse_bytes(value: int | float | str) -> int:
    """``"4g"`` / ``"512Mi"`` / ``"1.5GB"`` / ``1024`` → bytes (docker's convention: k/m/g are binary)."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number or a string like '4g'")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a size must be a finite number")
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _SIZE_RE.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"cannot read size {value!r}; use a number with k, m, g or t (e.g. '4g', '512m')")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(value: int | float | str) -> float:
    """``"90s"`` / ``"2h30m"`` / ``45`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '2h'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = value.strip().lower()
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"cannot read duration {value!r}; use e.g. '90s', '30m', '2h'")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid spec"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": "unknown field" if e["type"] == "extra_forbidden" else e["msg"]}
        for e in exc.errors()
    ]


def parse_model(model: type[M], data: Any, source: str = "spec") -> M:
    """Validate ``data`` into ``model``, turning pydantic's error into a SpecError naming each field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source), details=validation_details(exc)) from None


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans (true/false only). YAML 1.1 also reads on/off/yes/no
    as booleans, which turns a job's `retry: {on: [failed]}` into the key True."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None


def load_model(model: type[M], path: str | Path) -> M:
    return parse_model(model, load_yaml(path), str(path))
