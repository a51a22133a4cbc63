"""Built-in policies and their registry."""

from __future__ import annotations

from deepdock.scheduler.policies.baselines import Fifo, FifoBackfill, Priority, Sjf, Srtf, Tiresias
from deepdock.scheduler.policies.default import DefaultPolicy

__all__ = ["DefaultPolicy", "Fifo", "FifoBackfill", "Priority", "Sjf", "Srtf", "Tiresias"]
