"""A working copy of the cluster's free capacity, indexed so that placing a job is not a scan of every node.

Nodes sit in buckets by how many whole GPUs they have free (per GPU type, and for "any type"); partly used
GPUs sit in buckets by their free share. Finding a node is then a walk up from the smallest bucket that
could fit (best fit: multi-GPU jobs consolidate, and whole GPUs are not broken for small shares).
A request for a minimum of GPU memory that some GPUs of its type lack gets buckets of its own (keyed by type
and minimum), built on first use in a call; one that every GPU of its type meets uses the type's buckets,
so requests without a memory floor cost nothing extra.
The allocator is created per scheduling call from a ``ClusterState`` and mutated as the call places jobs,
so that one call never over-commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from deepdock.scheduler.types import EPSILON, NodeState, ReplicaPlacement, Resources

# Partly used GPUs are bucketed by free share in steps of 1/SHARE_BUCKETS.
SHARE_BUCKETS = 100
_ANY = ""  # bucket key meaning "any GPU type"

# Which GPUs a request may use: a type (``_ANY``: any), or (type, minimum GPU memory in bytes).
Key = str | tuple[str, int]


def _unpack(key: Key) -> tuple[str, int]:
    return key if isinstance(key, tuple) else (key, 0)


class NodeView:
    """Mutable free capacity of one node during one scheduling call."""

    __slots__ = ("name", "cpus", "memory", "free_cpus", "free_memory", "gpu_types", "gpu_memory", "gpu_free",
                 "counts")

    def __init__(self, node: NodeState) -> None:
        self.name = node.name
        self.cpus = node.cpus
        self.memory = node.memory
        self.free_cpus = float(node.free_cpus if node.free_cpus is not None else node.cpus)
        self.free_memory = int(node.free_memory if node.free_memory is not None else node.memory)
        self.gpu_types = [g.type for g in node.gpus]
        self.gpu_memory = [g.memory for g in node.gpus]
        self.gpu_free = [g.free_share for g in node.gpus]
        self.counts: dict[Key, int] = {}  # bucket key -> whole-free count it is filed under

    def eligible(self, i: int, gpu_type: str | None, gpu_memory: int | None = None) -> bool:
        """May a request for ``gpu_type`` with at least ``gpu_memory`` bytes use device ``i``?"""
        return (gpu_type is None or self.gpu_types[i] == gpu_type) and \
            (not gpu_memory or self.gpu_memory[i] >= gpu_memory)

    def whole_free(self, gpu_type: str | None, gpu_memory: int | None = None) -> int:
        return sum(1 for i, f in enumerate(self.gpu_free) if f >= 1 - EPSILON and self.eligible(i, gpu_type, gpu_memory))

    def fits_host(self, r: Resources, n: int = 1) -> bool:
        return self.free_cpus + EPSILON >= r.cpus * n and self.free_memory >= r.memory * n


class Allocator:
    def __init__(self, nodes: Iterable[NodeState]) -> None:
        self.nodes: dict[str, NodeView] = {}
        self.max_gpus_per_node = 0
        self._buckets: dict[Key, list[dict[str, None]]] = {}
        self._shares: dict[Key, list[dict[tuple[str, int], None]]] = {}
        # (node, device) -> the share-list keys it is filed under and its level.
        self._share_slot: dict[tuple[str, int], tuple[tuple[Key, ...], int]] = {}
        self._max_cache: dict[Key, int] = {}
        # Memory-floor keys in use in this call, and the least GPU memory per type (built on first need).
        self._memory_keys: dict[tuple[str, int], None] = {}
        self._least_memory: dict[str, int] | None = None
        node_list = [n for n in nodes if n.schedulable]
        self.max_gpus_per_node = max((len(n.gpus) for n in node_list), default=0)
        for node in node_list:
            nv = NodeView(node)
            self.nodes[nv.name] = nv
            self._reindex(nv)

    # ---- index maintenance -------------------------------------------------------------------
    def _key(self, gpu_type: str | None, gpu_memory: int | None) -> Key:
        """The bucket key of a request: its type, or (type, floor) when the floor excludes some GPU."""
        t = gpu_type or _ANY
        if not gpu_memory:
            return t
        least = self._least_memory
        if least is None:
            least = self._least_memory = {}
            for nv in self.nodes.values():
                for gt, gm in zip(nv.gpu_types, nv.gpu_memory, strict=True):
                    for k in (_ANY, gt):
                        if gm < least.get(k, gm + 1):
                            least[k] = gm
        floor = least.get(t)
        if floor is None or gpu_memory <= floor:
            return t  # every GPU of the type is large enough (or there is none of the type at all)
        key = (t, gpu_memory)
        if key not in self._memory_keys:
            self._memory_keys[key] = None
            for nv in self.nodes.values():
                self._reindex(nv)
        return key

    def _bucket(self, key: Key) -> list[dict[str, None]]:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [{} for _ in range(self.max_gpus_per_node + 1)]
        return b

    def _reindex(self, nv: NodeView) -> None:
        self._max_cache.clear()
        wanted: dict[Key, int] = {_ANY: 0}
        for t, f in zip(nv.gpu_types, nv.gpu_free, strict=True):
            wanted.setdefault(t, 0)
            if f >= 1 - EPSILON:
                wanted[_ANY] += 1
                wanted[t] += 1
        for memory_key in self._memory_keys:
            kt, floor = memory_key
            for t, m, f in zip(nv.gpu_types, nv.gpu_memory, nv.gpu_free, strict=True):
                if m >= floor and (not kt or t == kt):
                    wanted[memory_key] = wanted.get(memory_key, 0) + (1 if f >= 1 - EPSILON else 0)
        for key, count in wanted.items():
            old = nv.counts.get(key)
            if old != count:
                bucket = self._bucket(key)
                if old is not None:
                    del bucket[old][nv.name]
                bucket[count][nv.name] = None
                nv.counts[key] = count
        for i, (t, f) in enumerate(zip(nv.gpu_types, nv.gpu_free, strict=True)):
            self._reindex_share(nv, i, t, f)

    def _reindex_share(self, nv: NodeView, i: int, gpu_type: str, free: float) -> None:
        slot_key = (nv.name, i)
        old = self._share_slot.pop(slot_key, None)
        if old is not None:
            for key in old[0]:
                del self._shares[key][old[1]][slot_key]
        if EPSILON < free < 1 - EPSILON:
            level = min(SHARE_BUCKETS - 1, int(free * SHARE_BUCKETS + EPSILON))
            keys: tuple[Key, ...] = (_ANY, gpu_type)
            if self._memory_keys:
                memory = nv.gpu_memory[i]
                keys += tuple(k for k in self._memory_keys if memory >= k[1] and (not k[0] or k[0] == gpu_type))
            for key in keys:
                lst = self._shares.get(key)
                if lst is None:
                    lst = self._shares[key] = [{} for _ in range(SHARE_BUCKETS)]
                lst[level][slot_key] = None
            self._share_slot[slot_key] = (keys, level)

    # ---- queries -----------------------------------------------------------------------------
    def max_whole_free(self, gpu_type: str | None, gpu_memory: int | None = None) -> int:
        """The most whole GPUs free on one node (of the type, and with at least the memory, if given)."""
        return self._max_free(self._key(gpu_type, gpu_memory))

    def largest_free_share(self, gpu_type: str | None, gpu_memory: int | None = None) -> float:
        """The largest free share of one GPU that the request may use."""
        return max((f for nv in self.nodes.values() for i, f in enumerate(nv.gpu_free)
                    if nv.eligible(i, gpu_type, gpu_memory)), default=0.0)

    def _max_free(self, key: Key) -> int:
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
        return not self._share_slot and self._max_free(_ANY) == 0

    def _nodes_with_at_least(self, whole: int, key: Key) -> Iterator[NodeView]:
        bucket = self._buckets.get(key)
        if not bucket:
            return
        for count in range(whole, len(bucket)):
            # Callers stop iterating before they take capacity, so the bucket is not copied.
            for name in bucket[count]:
                yield self.nodes[name]

    def _find_node(
        self, r: Resources, key: Key, blocked: frozenset[str] | set[str], avoid: set[str],
        n: int = 1,
    ) -> NodeView | None:
        """Best fit for ``n`` replicas of ``r`` together on one node."""
        if r.gpu_share:
            if n != 1:
                return None
            return self._find_share(r, key, blocked, avoid)
        whole = r.whole_gpus * n
        if whole > self._max_free(key) and whole > 0:
            return None
        for nv in self._nodes_with_at_least(whole, key if whole else _ANY):
            if nv.name in blocked or nv.name in avoid:
                continue
            if nv.fits_host(r, n):
                return nv
        return None

    def _find_share(
        self, r: Resources, key: Key, blocked: frozenset[str] | set[str], avoid: set[str]
    ) -> NodeView | None:
        share = r.gpu_share
        lists = self._shares.get(key)
        if lists:
            # Best fit among partly used devices first, so whole GPUs stay whole.
            for level in range(int(share * SHARE_BUCKETS - EPSILON), SHARE_BUCKETS):
                for name, i in lists[level]:
                    nv = self.nodes[name]
                    if nv.gpu_free[i] + EPSILON >= share and name not in blocked and name not in avoid \
                            and nv.fits_host(r):
                        return nv
        for nv in self._nodes_with_at_least(1, key):
            if nv.name not in blocked and nv.name not in avoid and nv.fits_host(r):
                return nv
        return None

    # ---- mutation ----------------------------------------------------------------------------
    def _take(self, nv: NodeView, r: Resources, key: Key) -> ReplicaPlacement:
        nv.free_cpus -= r.cpus
        nv.free_memory -= r.memory
        types, mems, free = nv.gpu_types, nv.gpu_memory, nv.gpu_free
        gpu_type, floor = _unpack(key)
        if r.gpu_share:
            share = r.gpu_share
            best = -1
            for i, f in enumerate(free):
                if (not gpu_type or types[i] == gpu_type) and mems[i] >= floor and f + EPSILON >= share:
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
            if f >= 1 - EPSILON and (not gpu_type or types[i] == gpu_type) and mems[i] >= floor:
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
        gpu_memory: int | None = None,
        one_node: bool = False,
        avoid: frozenset[str] | set[str] = frozenset(),
    ) -> list[ReplicaPlacement] | None:
        """Place all replicas or none (the capacity is taken; ``release`` undoes it). Only GPUs of
        ``gpu_type`` (any when None) with at least ``gpu_memory`` bytes (any when None) are used;
        ``one_node``: every replica on the same node, or none placed; ``avoid``: nodes a spread
        placement uses only when no other fits."""
        if r.gpus > 1 and r.whole_gpus > self.max_gpus_per_node:
            return None
        key = self._key(gpu_type, gpu_memory) if r.gpus > 0 else _ANY
        done: list[ReplicaPlacement] = []
        if one_node and replicas > 1:
            ok = self._place_on_one(r, replicas, key, blocked, done)
        elif spread or replicas == 1:
            ok = self._place_spread(r, replicas, key, blocked, done, avoid)
        else:
            ok = self._place_packed(r, replicas, key, blocked, done)
        if not ok:
            self.release(r, done)
            return None
        return done

    def _place_spread(
        self, r: Resources, n: int, key: Key, blocked: frozenset[str] | set[str],
        done: list[ReplicaPlacement], avoid: frozenset[str] | set[str] = frozenset(),
    ) -> bool:
        used: set[str] = set(avoid)
        for _ in range(n):
            nv = self._find_node(r, key, blocked, used)
            if nv is None and used:  # spreading is a preference; share a node rather than not run
                nv = self._find_node(r, key, blocked, set())
            if nv is None:
                return False
            done.append(self._take(nv, r, key))
            used.add(nv.name)
        return True

    def _place_on_one(
        self, r: Resources, n: int, key: Key, blocked: frozenset[str] | set[str],
        done: list[ReplicaPlacement],
    ) -> bool:
        if r.whole_gpus * n > self.max_gpus_per_node:
            return False
        if r.gpu_share:
            nv = self._node_holding_shares(r, n, key, blocked)
            if nv is None:
                return False
            done.extend(self._take(nv, r, key) for _ in range(n))
            return True
        nv = self._find_node(r, key, blocked, set(), n)
        if nv is None:
            return False
        done.extend(self._take(nv, r, key) for _ in range(n))
        return True

    def _node_holding_shares(self, r: Resources, n: int, key: Key,
                             blocked: frozenset[str] | set[str]) -> NodeView | None:
        """The node whose eligible devices hold ``n`` shares of ``r`` (and its CPUs and memory ``n``
        replicas) with the least room to spare; None when no node does."""
        gpu_type, floor = _unpack(key)
        best: tuple[int, NodeView] | None = None
        for nv in self.nodes.values():
            if nv.name in blocked or not nv.fits_host(r, n):
                continue
            slots = sum(int((f + EPSILON) // r.gpu_share) for i, f in enumerate(nv.gpu_free)
                        if (not gpu_type or nv.gpu_types[i] == gpu_type) and nv.gpu_memory[i] >= floor)
            if slots >= n and (best is None or slots < best[0]):
                best = (slots, nv)
        return best[1] if best else None

    def _place_packed(
        self, r: Resources, n: int, key: Key, blocked: frozenset[str] | set[str],
        done: list[ReplicaPlacement],
    ) -> bool:
        """Consolidate a gang onto as few nodes as possible: the biggest free nodes first, then best fit
        for the remainder."""
        remaining = n
        per = r.whole_gpus
        no_avoid: set[str] = set()
        while remaining:
            if per == 0 or per * remaining <= self.max_gpus_per_node:
                nv = self._find_node(r, key, blocked, no_avoid, remaining)
                if nv is not None:
                    done.extend(self._take(nv, r, key) for _ in range(remaining))
                    return True
                if per == 0:  # CPU or fractional gang: one replica at a time, best fit
                    nv = self._find_node(r, key, blocked, no_avoid)
                    if nv is None:
                        return False
                    done.append(self._take(nv, r, key))
                    remaining -= 1
                    continue
            biggest = self._largest_node(r, key, blocked)
            if biggest is None:
                return False
            nv, k = biggest
            k = min(k, remaining)
            done.extend(self._take(nv, r, key) for _ in range(k))
            remaining -= k
        return True

    def _largest_node(
        self, r: Resources, key: Key, blocked: frozenset[str] | set[str]
    ) -> tuple[NodeView, int] | None:
        bucket = self._buckets.get(key)
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
