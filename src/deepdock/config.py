"""The CLI's config file (server URL and token), written by the server on its first start."""

from __future__ import annotations

import json
import os
from pathlib import Path

from deepdock.settings import Settings

CONFIG_NAME = "config.json"


def config_path(settings: Settings) -> Path:
    return settings.home / CONFIG_NAME


def read_config(settings: Settings) -> dict[str, str]:
    path = config_path(settings)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_config(settings: Settings, url: str, token: str) -> Path:
    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # The token is a credential: only the owner may read it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    tmp.replace(path)
    return path
