"""Cluster description for the simulator (YAML).

```yaml
nodes:                     # a list of nodes or node groups
  - name: gpu              # with count > 1 the nodes are gpu-0, gpu-1, ...
    count: 4
    cpus: 64
    memory: 512g
    gpus: 8
    gpu_type: a100
    gpu_memory: 80g
    labels: {zone: a}
quotas:                    # optional per-project guarantees (totals)
  research: {cpus: 64, memory: 512g, gpus: 16}
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from deepdock.errors import SpecError
from deepdock.scheduler.types import GPU, NodeState, Resources
from deepdock.specs.common import StrictModel, load_yaml, parse_bytes, parse_model

DEFAULT_GPU_MEMORY_BYTES = 80 * 1024**3


class NodeGroupSpec(StrictModel):
    name: str
    count: int = Field(1, ge=1, le=100_000)
    cpus: float = Field(gt=0)
    memory: int
    gpus: int = Field(0, ge=0, le=64)
    gpu_type: str = "gpu"
    gpu_memory: int = DEFAULT_GPU_MEMORY_BYTES
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("memory", "gpu_memory", mode="before")
    @classmethod
    def _sizes(cls, v: object) -> object:
        return parse_bytes(v)  # type: ignore[arg-type]


class QuotaSpec(StrictModel):
    cpus: float = Field(0, ge=0)
    memory: int = 0
    gpus: float = Field(0, ge=0)

    @field_validator("memory", mode="before")
    @classmethod
    def _size(cls, v: object) -> object:
        return parse_bytes(v)  # type: ignore[arg-type]


class ClusterSpec(StrictModel):
    nodes: list[NodeGroupSpec] = Field(min_length=1)
    quotas: dict[str, QuotaSpec] = Field(default_factory=dict)

    def to_nodes(self) -> list[NodeState]:
        out: list[NodeState] = []
        for g in self.nodes:
            for i in range(g.count):
                name = g.name if g.count == 1 else f"{g.name}-{i}"
                out.append(NodeState(
                    name=name, cpus=g.cpus, memory=g.memory,
                    gpus=[GPU(k, g.gpu_type, g.gpu_memory) for k in range(g.gpus)], labels=dict(g.labels),
                ))
        names = [n.name for n in out]
        if len(set(names)) != len(names):
            raise SpecError("cluster: node names must be unique")
        return out

    def to_quotas(self) -> dict[str, Resources]:
        return {p: Resources(q.cpus, q.memory, q.gpus) for p, q in self.quotas.items()}


def load_cluster(path: str | Path) -> ClusterSpec:
    return parse_model(ClusterSpec, load_yaml(path), str(path))
