"""Policies by name: ``get_policy("default")``."""

from __future__ import annotations

from collections.abc import Callable

from deepdock.errors import SpecError
from deepdock.scheduler.engine import QueuePolicy
from deepdock.scheduler.policies import DefaultPolicy, Fifo, FifoBackfill, Priority, Sjf, Srtf, Tiresias

POLICIES: dict[str, Callable[[], QueuePolicy]] = {
    "default": DefaultPolicy,
    "fifo": Fifo,
    "fifo-backfill": FifoBackfill,
    "sjf": Sjf,
    "srtf": Srtf,
    "tiresias": Tiresias,
    "priority": Priority,
}


def get_policy(name: str) -> QueuePolicy:
    """A fresh policy object by name; unknown names raise SpecError listing the valid ones."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise SpecError(
            f"unknown scheduling policy {name!r}; choose one of: {', '.join(sorted(POLICIES))}",
            details={"valid": sorted(POLICIES)},
        ) from None
    return factory()
