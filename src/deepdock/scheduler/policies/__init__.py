"""Built-in policies, and the lookup by name: ``get_policy("default")``."""

from __future__ import annotations

from collections.abc import Callable

from deepdock.errors import SpecError
from deepdock.scheduler.policies.baselines import Fifo, FifoBackfill, Priority, Sjf, Srtf, Tiresias
from deepdock.scheduler.policies.default import DefaultPolicy
from deepdock.scheduler.queue_policy import QueuePolicy

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


__all__ = ["POLICIES", "DefaultPolicy", "Fifo", "FifoBackfill", "Priority", "Sjf", "Srtf", "Tiresias", "get_policy"]
