"""What finished jobs needed: an online, empirical distribution of GPU-service at completion, and the
Gittins index computed from it (Gittins 1979; Tiresias, NSDI'19, uses it for GPU jobs).

The scheduler never learns how long a job will run. What it can learn is how much service *finished* jobs
took: each completion adds one sample (attained GPU-seconds at completion) to its size class (1 GPU,
2–8 GPUs, more than 8). For a job that has already attained ``a``, the Gittins index is

    G(a) = max over b > a of  P(S <= b | S > a) / E[min(S, b) - a | S > a]

the best achievable rate of "completion probability per GPU-second invested" if the job is run from ``a``
up to some budget ``b``. Serving the highest index first minimizes mean completion time among policies
that do not know sizes (for a single server); when sizes have a decreasing hazard rate it equals
least-attained-service, and where the distribution has bumps (many jobs of one typical length) it keeps
running a job that is about to reach one instead of sharing the GPUs round-robin.

Service is quantized to log-scale bins (``BINS_PER_OCTAVE`` per doubling above ``BASE_GPU_S``), so an
index is a table lookup; tables are rebuilt only after the class has grown by a sixteenth. Everything is
deterministic: the same completions in the same order give the same indices. No clock, no I/O.
"""

from __future__ import annotations

import math

# Bin edges: 0, BASE, BASE·2^(1/k), ... up to about MAX_GPU_S.
BASE_GPU_S = 60.0
BINS_PER_OCTAVE = 2
MAX_GPU_S = 1e9
# Index a class's own samples only once it has this many; below that use every class's samples pooled.
MIN_SAMPLES = 32
# An index computed from fewer completed jobs above ``a`` than this is noise (and biased: early on only
# short jobs have finished); beyond it the index decays like 1/a, i.e. least-attained-service.
MIN_SURVIVORS = 8
# Rebuild a table when its class has grown by this fraction since the last build (or by REFRESH_MIN).
REFRESH_FRACTION = 1 / 16
REFRESH_MIN = 8

_EDGES = [0.0] + [BASE_GPU_S * 2 ** (i / BINS_PER_OCTAVE)
                  for i in range(int(math.log2(MAX_GPU_S / BASE_GPU_S) * BINS_PER_OCTAVE) + 1)]
POOLED = -1



def size_class(gpus: float) -> int:
    """0: at most one GPU (or none), 1: 2–8 GPUs (one node), 2: more than one node's worth."""
    return 0 if gpus <= 1 else 1 if gpus <= 8 else 2


def service_bin(attained_gpu_s: float) -> int:
    if attained_gpu_s < BASE_GPU_S:
        return 0
    b = 1 + int(math.log2(attained_gpu_s / BASE_GPU_S) * BINS_PER_OCTAVE)
    return min(b, len(_EDGES) - 1)


def gittins_table(samples: list[float]) -> list[float]:
    """G at the lower edge of every bin, for the empirical distribution of ``samples`` (GPU-seconds)."""
    edges = _EDGES
    nb = len(edges)
    xs = sorted(samples)
    n = len(xs)
    # count[j] / total[j]: how many samples are <= edges[j], and their sum; a last virtual edge at infinity.
    count = [0] * (nb + 1)
    total = [0.0] * (nb + 1)
    k, acc = 0, 0.0
    for j, e in enumerate(edges):
        while k < n and xs[k] <= e:
            acc += xs[k]
            k += 1
        count[j], total[j] = k, acc
    count[nb], total[nb] = n, acc + sum(xs[k:])
    table = [0.0] * nb
    last = -1
    for i in range(nb):
        above = n - count[i]
        if above < MIN_SURVIVORS:
            break
        a, ci, ti = edges[i], count[i], total[i]
        best = 0.0
        for j in range(i + 1, nb + 1):
            done = count[j] - ci
            if done == 0:
                continue
            # Expected GPU-seconds spent from a to min(S, b), times the survivors: jobs ending in (a, b]
            # contribute S - a, the rest b - a.
            spent = (total[j] - ti) - a * done
            if j < nb:
                spent += (n - count[j]) * (edges[j] - a)
            if spent > 0 and done / spent > best:
                best = done / spent
        table[i] = best
        last = i
    if last < 0:
        return []
    for i in range(last + 1, nb):  # too few survivors: LAS-like decay from the last reliable value
        table[i] = table[last] * max(edges[last], BASE_GPU_S) / edges[i]
    return table


class ServiceHistory:
    """Completed jobs' GPU-service, by size class, and Gittins tables built from it on demand."""

    def __init__(self) -> None:
        self._samples: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._tables: dict[int, tuple[int, list[float]]] = {}  # class -> (samples when built, table)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def record(self, gpus: float, service_gpu_s: float) -> None:
        """A job using ``gpus`` (GPU-equivalents per second, see ``service_rate``) finished after
        attaining ``service_gpu_s``."""
        self._samples[size_class(gpus)].append(max(0.0, service_gpu_s))
        self._n += 1

    @property
    def ready(self) -> bool:
        """Enough completions to rank by Gittins index at all (otherwise: plain LAS)."""
        return self._n >= MIN_SAMPLES

    def _table(self, cls: int) -> list[float]:
        n = self._n if cls == POOLED else len(self._samples[cls])
        built = self._tables.get(cls)
        if built is not None and n - built[0] < max(REFRESH_MIN, built[0] * REFRESH_FRACTION):
            return built[1]
        if cls == POOLED:
            samples = [x for s in self._samples.values() for x in s]
        else:
            samples = self._samples[cls]
        table = gittins_table(samples)
        self._tables[cls] = (n, table)
        return table

    def index(self, gpus: float, attained_gpu_s: float) -> float:
        """Gittins index (completions per GPU-second) of a job of ``gpus`` that has attained so much
        service; its own class's distribution when that has MIN_SAMPLES, else all classes pooled.
        Only meaningful when ``ready``."""
        cls = size_class(gpus)
        table = self._table(cls) if len(self._samples[cls]) >= MIN_SAMPLES else []
        if not table:
            table = self._table(POOLED)
        if not table:
            return 1.0 / max(attained_gpu_s, BASE_GPU_S)
        return table[service_bin(attained_gpu_s)]
