"""A working copy of the cluster's free capacity, indexed so that placing a job is not a scan of every node.

Nodes sit in buckets by how many whole GPUs they have free (per GPU type, and for "any type"); partly used
GPUs sit in buckets by their free share. Finding a node is then a walk up from the smallest bucket that
could fit (best fit: multi-GPU jobs consolidate, and whole GPUs are not broken for small shares).
The allocator is created per scheduling call from a ``ClusterState`` and mutated as the call places jobs,
so that one call never over-commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from deepdock.scheduler.types import EPSILON, NodeState, ReplicaPlacement, Resources

# Partly used GPUs are bucketed by free share in steps of 1/SHARE_BUCKETS.
SHARE_BUCKETS = 100
_ANY = ""  # bucket key meaning "any GPU type"


class NodeView:
    """Mutable free capacity of one node during one scheduling call."""

    __slots__ = ("name", "cpus", "memory", "free_cpus", "free_memory", "gpu_types", "gpu_free", "counts")

    def __init__(self, node: NodeState) -> None:
        self.name = node.name
        self.cpus = node.cpus
        self.memory = node.memory
        self.free_cpus = float(node.free_cpus if node.free_cpus is not None else node.cpus)
        self.free_memory = int(node.free_memory if node.free_memory is not None else node.memory)
        self.gpu_types = [g.type for g in node.gpus]
        self.gpu_free = [g.free_share for g in node.gpus]
        self.counts: dict[str, int] = {}  # bucket key -> whole-free count it is filed under

    def whole_free(self, gpu_type: str | None) -> int:
        return sum(
            1 for t, f in zip(self.gpu_types, self.gpu_free, strict=True)
            if f >= 1 - EPSILON and (gpu_type is None or t == gpu_type)
        )

    def fits_host(self, r: Resources, n: int = 1) -> bool:
        return self.free_cpus + EPSILON >= r.cpus * n and self.free_memory >= r.memory * n


class Allocator:
    def __init__(self, nodes: Iterable[NodeState]) -> None:
        self.nodes: dict[str, NodeView] = {}
        self.max_gpus_per_node = 0
        self._buckets: dict[str, list[dict[str, None]]] = {}
        self._shares: dict[str, list[dict[tuple[str, int], None]]] = {}
        self._share_slot: dict[tuple[str, int], tuple[str, int]] = {}
        self._max_cache: dict[str, int] = {}
        node_list = [n for n in nodes if n.schedulable]
        self.max_gpus_per_node = max((len(n.gpus) for n in node_list), default=0)
        for node in node_list:
            nv = NodeView(node)
            self.nodes[nv.name] = nv
            self._reindex(nv)

    # ---- index maintenance -------------------------------------------------------------------
    def _bucket(self, key: str) -> list[dict[str, None]]:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [{} for _ in range(self.max_gpus_per_node + 1)]
        return b

    def _reindex(self, nv: NodeView) -> None:
        self._max_cache.clear()
        wanted: dict[str, int] = {_ANY: 0}
        for t, f in zip(nv.gpu_types, nv.gpu_free, strict=True):
            wanted.setdefault(t, 0)
            if f >= 1 - EPSILON:
                wanted[_ANY] += 1
                wanted[t] += 1
        for key, count in wanted.items():
            old = nv.counts.get(key)
            if old != count:
                bucket = self._bucket(key)
                if old is not None:
                    del bucket[old][nv.name]
                bucket[count][nv.name] = None
                nv.counts[key] = count
        for i, (t, f) in enumerate(zip(nv.gpu_types, nv.gpu_free, strict=True)):
            self._reindex_share(nv.name, i, t, f)

    def _reindex_share(self, name: str, i: int, gpu_type: str, free: float) -> None:
        slot_key = (name, i)
        old = self._share_slot.pop(slot_key, None)
        if old is not None:
            for key in (_ANY, gpu_type):
                del self._shares[key][old[1]][slot_key]
        if EPSILON < free < 1 - EPSILON:
            level = min(SHARE_BUCKETS - 1, int(free * SHARE_BUCKETS + EPSILON))
            for key in (_ANY, gpu_type):
                lst = self._shares.get(key)
                if lst is None:
                    lst = self._shares[key] = [{} for _ in range(SHARE_BUCKETS)]
                lst[level][slot_key] = None
            self._share_slot[slot_key] = (gpu_type, level)

    # ---- queries -----------------------------------------------------------------------------
    def max_whole_free(self, gpu_type: str | None) -> int:
        """The most whole GPUs free on one node (of the type, if given)."""
        key = gpu_type or _ANY
        cached = self._max_cache.get(key)
        if cached is not None:
            return cached
        bucket = self._buckets.get(key)
        best = 0
        for count in range(len(bucket) - 1 if bucket else 0, 0, -1):
            if bucket and bucket[count]:
                best = count
                break
        self._max_cache[key] = best
        return best

    def no_gpu_free(self) -> bool:
        return not self._share_slot and self.max_whole_free(None) == 0

    def _nodes_with_at_least(self, whole: int, gpu_type: str | None) -> Iterator[NodeView]:
        bucket = self._buckets.get(gpu_type or _ANY)
        if not bucket:
            return
        for count in range(whole, len(bucket)):
            # Callers stop iterating before they take capacity, so the bucket is not copied.
            for name in bucket[count]:
                yield self.nodes[name]

    def _find_node(
        self, r: Resources, gpu_type: str | None, blocked: frozenset[str] | set[str], avoid: set[str],
        n: int = 1,
    ) -> NodeView | None:
        """Best fit for ``n`` replicas of ``r`` together on one node."""
        if r.gpu_share:
            if n != 1:
                return None
            return self._find_share(r, gpu_type, blocked, avoid)
        whole = r.whole_gpus * n
        if whole > self.max_whole_free(gpu_type) and whole > 0:
            return None
        for nv in self._nodes_with_at_least(whole, gpu_type if whole else None):
            if nv.name in blocked or nv.name in avoid:
                continue
            if nv.fits_host(r, n):
                return nv
        return None

    def _find_share(
        self, r: Resources, gpu_type: str | None, blocked: frozenset[str] | set[str], avoid: set[str]
    ) -> NodeView | None:
        share = r.gpu_share
        lists = self._shares.get(gpu_type or _ANY)
        if lists:
            # Best fit among partly used devices first, so whole GPUs stay whole.
            for level in range(int(share * SHARE_BUCKETS - EPSILON), SHARE_BUCKETS):
                for name, i in lists[level]:
                    nv = self.nodes[name]
                    if nv.gpu_free[i] + EPSILON >= share and name not in blocked and name not in avoid \
                            and nv.fits_host(r):
                        return nv
        for nv in self._nodes_with_at_least(1, gpu_type):
            if nv.name not in blocked and nv.name not in avoid and nv.fits_host(r):
                return nv
        return None

    # ---- mutation ----------------------------------------------------------------------------
    def _take(self, nv: NodeView, r: Resources, gpu_type: str | None) -> ReplicaPlacement:
        nv.free_cpus -= r.cpus
        nv.free_memory -= r.memory
        types, free = nv.gpu_types, nv.gpu_free
        if r.gpu_share:
            share = r.gpu_share
            best = -1
            for i, f in enumerate(free):
                if (gpu_type is None or types[i] == gpu_type) and f + EPSILON >= share:
                    # Smallest sufficient free share: keep whole devices whole.
                    if best < 0 or f < free[best]:
                        best = i
            free[best] -= share
            self._reindex(nv)
            return ReplicaPlacement(nv.name, [best], share)
        indices: list[int] = []
        need = r.whole_gpus
        for i, f in enumerate(free):
            if len(indices) == need:
                break
            if f >= 1 - EPSILON and (gpu_type is None or types[i] == gpu_type):
                indices.append(i)
        for i in indices:
            free[i] = 0.0
        if indices:
            self._reindex(nv)
        return ReplicaPlacement(nv.name, indices, 1.0)

    def commit(self, r: Resources, placements: Iterable[ReplicaPlacement]) -> None:
        """Take an existing placement (used to replay holds, e.g. a preemptor's claim)."""
        for p in placements:
            nv = self.nodes.get(p.node)
            if nv is None:
                continue
            nv.free_cpus -= r.cpus
            nv.free_memory -= r.memory
            for i in p.gpu_indices:
                nv.gpu_free[i] -= p.gpu_share if r.gpu_share else 1.0
            self._reindex(nv)

    def release(self, r: Resources, placements: Iterable[ReplicaPlacement]) -> None:
        for p in placements:
            nv = self.nodes.get(p.node)
            if nv is None:
                continue
            nv.free_cpus += r.cpus
            nv.free_memory += r.memory
            for i in p.gpu_indices:
                nv.gpu_free[i] = min(1.0, nv.gpu_free[i] + (p.gpu_share if r.gpu_share else 1.0))
            self._reindex(nv)

    def place(
        self,
        r: Resources,
        replicas: int,
        gpu_type: str | None = None,
        spread: bool = False,
        blocked: frozenset[str] | set[str] = frozenset(),
    ) -> list[ReplicaPlacement] | None:
        """Place all replicas or none (the capacity is taken; ``release`` undoes it)."""
        if r.gpus > 1 and r.whole_gpus > self.max_gpus_per_node:
            return None
        done: list[ReplicaPlacement] = []
        ok = self._place_spread(r, replicas, gpu_type, blocked, done) if spread or replicas == 1 \
            else self._place_packed(r, replicas, gpu_type, blocked, done)
        if not ok:
            self.release(r, done)
            return None
        return done

    def _place_spread(
        self, r: Resources, n: int, gpu_type: str | None, blocked: frozenset[str] | set[str],
        done: list[ReplicaPlacement],
    ) -> bool:
        used: set[str] = set()
        for _ in range(n):
            nv = self._find_node(r, gpu_type, blocked, used)
            if nv is None and used:  # spreading is a preference; share a node rather than not run
                nv = self._find_node(r, gpu_type, blocked, set())
            if nv is None:
                return False
            done.append(self._take(nv, r, gpu_type))
            used.add(nv.name)
        return True

    def _place_packed(
        self, r: Resources, n: int, gpu_type: str | None, blocked: frozenset[str] | set[str],
        done: list[ReplicaPlacement],
    ) -> bool:
        """Consolidate a gang onto as few nodes as possible: the biggest free nodes first, then best fit
        for the remainder."""
        remaining = n
        per = r.whole_gpus
        no_avoid: set[str] = set()
        while remaining:
            if per == 0 or per * remaining <= self.max_gpus_per_node:
                nv = self._find_node(r, gpu_type, blocked, no_avoid, remaining)
                if nv is not None:
                    done.extend(self._take(nv, r, gpu_type) for _ in range(remaining))
                    return True
                if per == 0:  # CPU or fractional gang: one replica at a time, best fit
                    nv = self._find_node(r, gpu_type, blocked, no_avoid)
                    if nv is None:
                        return False
                    done.append(self._take(nv, r, gpu_type))
                    remaining -= 1
                    continue
            biggest = self._largest_node(r, gpu_type, blocked)
            if biggest is None:
                return False
            nv, k = biggest
            k = min(k, remaining)
            done.extend(self._take(nv, r, gpu_type) for _ in range(k))
            remaining -= k
        return True

    def _largest_node(
        self, r: Resources, gpu_type: str | None, blocked: frozenset[str] | set[str]
    ) -> tuple[NodeView, int] | None:
        bucket = self._buckets.get(gpu_type or _ANY)
        if not bucket:
            return None
        per = r.whole_gpus
        for count in range(len(bucket) - 1, per - 1, -1):
            best: tuple[NodeView, int] | None = None
            for name in bucket[count]:
                if name in blocked:
                    continue
                nv = self.nodes[name]
                k = count // per
                if r.cpus > 0:
                    k = min(k, int((nv.free_cpus + EPSILON) // r.cpus))
                if r.memory > 0:
                    k = min(k, nv.free_memory // r.memory)
                if k >= count // per:
                    return nv, k
                if k > 0 and (best is None or k > best[1]):
                    best = (nv, k)
            if best is not None:
                return best
        return None

    # ---- summaries for pending reasons -------------------------------------------------------
    def largest_free(self) -> tuple[float, int, float]:
        """(most free cpus, most free memory, largest free GPU share) on any one node."""
        cpus = max((nv.free_cpus for nv in self.nodes.values()), default=0.0)
        mem = max((nv.free_memory for nv in self.nodes.values()), default=0)
        share = max((f for nv in self.nodes.values() for f in nv.gpu_free), default=0.0)
        return cpus, mem, share
