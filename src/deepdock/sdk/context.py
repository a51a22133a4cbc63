"""Where the code is running: the job, attempt and rank the server gave this container, as one object.

Read from the environment the start step sets (``DEEPDOCK_*`` and torchrun's ``RANK``/``WORLD_SIZE``...);
outside a job every field has a local default, so the same script runs on a laptop. Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_DIR_ENV = "DEEPDOCK_CHECKPOINT_DIR"
ARTIFACTS_DIR_ENV = "DEEPDOCK_ARTIFACTS_DIR"
# How many checkpoints a job keeps in its own container (the server keeps its own last N in the store).
LOCAL_KEEP_ENV = "DEEPDOCK_CHECKPOINT_KEEP"
DEFAULT_LOCAL_KEEP = 2


@dataclass(frozen=True)
class JobContext:
    job_id: str | None
    job_name: str
    attempt: int
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    artifacts_dir: Path
    checkpoint_dir: Path
    stop_grace_s: float

    @property
    def in_job(self) -> bool:
        """True inside a container the deepdock server started."""
        return self.job_id is not None


def _int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def current() -> JobContext:
    env = os.environ
    return JobContext(
        job_id=env.get("DEEPDOCK_JOB_ID") or None,
        job_name=env.get("DEEPDOCK_JOB_NAME", "local"),
        attempt=_int("DEEPDOCK_ATTEMPT", 0),
        rank=_int("RANK", 0),
        world_size=_int("WORLD_SIZE", 1),
        local_rank=_int("LOCAL_RANK", 0),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int("MASTER_PORT", 29500),
        artifacts_dir=Path(env.get(ARTIFACTS_DIR_ENV, "artifacts")),
        checkpoint_dir=Path(env.get(CHECKPOINT_DIR_ENV, "checkpoints")),
        stop_grace_s=float(env.get("DEEPDOCK_STOP_GRACE_S", "30") or 30),
    )


@dataclass(frozen=True)
class DistributedContext:
    """The gang this process belongs to, as the start step described it (docs/distributed.md).

    ``rank``/``world_size``/``local_rank``/``master_addr``/``master_port`` are torch's ``env://`` values for
    one process per container (torchrun, when it launches several, sets its own for its children);
    ``nnodes``/``node_rank``/``nproc_per_node`` are what to give torchrun; ``node_addrs`` is where each
    container (by rank) is reached; ``network`` is ``none``, ``private`` or ``host``."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    nnodes: int
    node_rank: int
    nproc_per_node: int
    node_addrs: tuple[str, ...]
    network: str
    socket_interface: str | None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        """Rank 0: the one that should save checkpoints and register models in data-parallel training."""
        return self.rank == 0

    @property
    def init_method(self) -> str:
        """For ``torch.distributed.init_process_group(init_method=...)`` when not using ``env://``."""
        return f"tcp://{self.master_addr}:{self.master_port}"


def distributed() -> DistributedContext:
    env = os.environ
    addrs = tuple(a for a in env.get("DEEPDOCK_NODE_ADDRS", "").split(",") if a)
    return DistributedContext(
        rank=_int("RANK", 0),
        world_size=_int("WORLD_SIZE", 1),
        local_rank=_int("LOCAL_RANK", 0),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int("MASTER_PORT", 29500),
        nnodes=_int("DEEPDOCK_NNODES", 1),
        node_rank=_int("DEEPDOCK_NODE_RANK", 0),
        nproc_per_node=_int("DEEPDOCK_NPROC_PER_NODE", 1),
        node_addrs=addrs or ("127.0.0.1",),
        network=env.get("DEEPDOCK_NETWORK", "none"),
        socket_interface=env.get("GLOO_SOCKET_IFNAME") or None,
    )
