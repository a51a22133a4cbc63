"""Could a request ever run here? Used by the server to reject at submit instead of queueing forever."""

from __future__ import annotations

from deepdock.scheduler.capacity import Allocator
from deepdock.scheduler.types import GPU, NodeState, Resources

_GIB = 1024**3


def _empty(node: NodeState) -> NodeState:
    return NodeState(
        name=node.name, cpus=node.cpus, memory=node.memory,
        gpus=[GPU(g.index, g.type, g.memory, 1.0) for g in node.gpus], labels=node.labels,
    )


def _fmt_gib(nbytes: float) -> str:
    return f"{nbytes / _GIB:.1f} GiB"


def _eligible(g: GPU, gpu_type: str | None, gpu_memory: int | None) -> bool:
    return (gpu_type is None or g.type == gpu_type) and (not gpu_memory or g.memory >= gpu_memory)


def can_ever_fit(
    resources: Resources, replicas: int, gpu_type: str | None, nodes: list[NodeState],
    gpu_memory: int | None = None, one_node: bool = False,
) -> str | None:
    """None if the job fits on the given nodes when they are empty, else why not (for people).
    ``gpu_memory``: the least memory (bytes) each of its GPUs must have (None: any); ``one_node``: all
    replicas on the same node."""
    if replicas < 1:
        return "a job needs at least one replica"
    if resources.gpus > 1 and resources.gpus != int(resources.gpus):
        return "more than one GPU must be a whole number; fractions are for a share of one GPU"
    if gpu_memory is not None and resources.gpus <= 0:
        return "a GPU memory requirement needs GPUs; the job asks for none"
    usable = [n for n in nodes if n.schedulable]
    if not usable:
        return "no schedulable node is registered"
    if resources.gpus > 0:
        typed = [n for n in usable if any(gpu_type is None or g.type == gpu_type for g in n.gpus)]
        kind = f"{gpu_type} " if gpu_type else ""
        if not typed:
            if gpu_type is not None:
                known = sorted({g.type for n in usable for g in n.gpus})
                have = ", ".join(known) if known else "none"
                return f"no node has GPUs of type {gpu_type!r}; types present: {have}"
            return f"no node has {max(1, resources.whole_gpus)} GPUs; the largest has 0"
        if gpu_memory:
            largest = max(g.memory for n in typed for g in n.gpus if gpu_type is None or g.type == gpu_type)
            if largest < gpu_memory:
                largest_here = f"the largest {gpu_type} GPUs here have" if gpu_type else "the largest here have"
                return f"needs {kind}GPUs with at least {_fmt_gib(gpu_memory)}; {largest_here} {_fmt_gib(largest)}"
        per_node = max(sum(1 for g in n.gpus if _eligible(g, gpu_type, gpu_memory)) for n in typed)
        need = max(1, resources.whole_gpus)
        if need > per_node:
            if gpu_memory:
                return (f"no node has {need} {kind}GPUs with at least {_fmt_gib(gpu_memory)}; "
                        f"the most on one node is {per_node}")
            return f"no node has {need} {kind}GPUs; the largest has {per_node}"
    most_cpus = max(n.cpus for n in usable)
    if resources.cpus > most_cpus:
        return f"no node has {resources.cpus:g} CPUs; the largest has {most_cpus:g}"
    most_mem = max(n.memory for n in usable)
    if resources.memory > most_mem:
        return f"no node has {_fmt_gib(resources.memory)} of memory; the largest has {_fmt_gib(most_mem)}"
    empty = [_empty(n) for n in usable]
    if one_node and replicas > 1 and Allocator(empty).place(resources, replicas, gpu_type, gpu_memory=gpu_memory,
                                                             one_node=True) is None:
        spans = Allocator(empty).place(resources, replicas, gpu_type, gpu_memory=gpu_memory) is not None
        return (f"{replicas} replicas must share one node (their network cannot span nodes) and no node holds "
                f"them even when empty" + ("; they would fit across nodes" if spans else ""))
    if Allocator(empty).place(resources, replicas, gpu_type, gpu_memory=gpu_memory) is None:
        total_gpus = sum(len(n.gpus) for n in usable)
        if resources.gpus > 0 and gpu_memory:
            eligible = sum(1 for n in usable for g in n.gpus if _eligible(g, gpu_type, gpu_memory))
            if resources.gpus * replicas > eligible:
                kind = f"{gpu_type} " if gpu_type else ""
                return (f"the job needs {resources.gpus * replicas:g} {kind}GPUs with at least "
                        f"{_fmt_gib(gpu_memory)} in all; the cluster has {eligible}")
        if resources.gpus > 0 and resources.gpus * replicas > total_gpus:
            return (f"the job needs {resources.gpus * replicas:g} GPUs in all; "
                    f"the cluster has {total_gpus}")
        return (f"{replicas} replicas of this size do not fit on the {len(usable)} schedulable "
                f"nodes even when they are empty")
    return None


def fits_now(
    resources: Resources, replicas: int, gpu_type: str | None, nodes: list[NodeState],
    gpu_memory: int | None = None, one_node: bool = False,
) -> bool:
    """Whether the job fits in the nodes' current free capacity."""
    return Allocator(nodes).place(resources, replicas, gpu_type, gpu_memory=gpu_memory, one_node=one_node) is not None
