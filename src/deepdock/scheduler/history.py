"""What finished jobs needed: an online, empirical distribution of GPU time at completion, and the
Gittins index computed from it (Gittins 1979; Tiresias, NSDI'19, uses it for GPU jobs).

The scheduler never learns how long a job will run. What it can learn is how much GPU time *finished* jobs
took: each completion adds one sample (attained GPU-seconds at completion) to its size class (1 GPU,
2–8 GPUs, more than 8). For a job that has already attained ``a``, the Gittins index is

    G(a) = max over b > a of  P(S <= b | S > a) / E[min(S, b) - a | S > a]

the best achievable rate of "completion probability per GPU-second invested" if the job is run from ``a``
up to some budget ``b``. Serving the highest index first minimizes mean completion time among policies
that do not know sizes (for a single server); when sizes have a decreasing hazard rate it equals
least-attained-GPU-time, and where the distribution has bumps (many jobs of one typical length) it keeps
running a job that is about to reach one instead of sharing the GPUs round-robin.

Attained GPU time is quantized to log-scale bins (``BINS_PER_OCTAVE`` per doubling above ``BASE_GPU_S``), so an
index is a table lookup; tables are rebuilt only after the class has grown by a sixteenth. Everything is
deterministic: the same completions in the same order give the same indices. No clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

# Bin edges: 0, BASE, BASE·2^(1/k), ... up to about MAX_GPU_S.
BASE_GPU_S = 60.0
BINS_PER_OCTAVE = 2
MAX_GPU_S = 1e9
# Index a class's own samples only once it has this many; below that use every class's samples pooled.
MIN_SAMPLES = 32
# An index computed from fewer completed jobs above ``a`` than this is noise (and biased: early on only
# short jobs have finished); beyond it the index decays like 1/a, i.e. least-attained-GPU-time.
MIN_SURVIVORS = 8
# Rebuild a table when its class has grown by this fraction since the last build (or by REFRESH_MIN).
REFRESH_FRACTION = 1 / 16
REFRESH_MIN = 8
# How many completions the class distribution counts for when blended with a cohort's own.
COHORT_PRIOR_WEIGHT = 1.0

_EDGES = [0.0] + [BASE_GPU_S * 2 ** (i / BINS_PER_OCTAVE)
                  for i in range(int(math.log2(MAX_GPU_S / BASE_GPU_S) * BINS_PER_OCTAVE) + 1)]
POOLED = -1



def size_class(gpus: float) -> int:
    """0: at most one GPU (or none), 1: 2–8 GPUs (one node), 2: more than one node's worth."""
    return 0 if gpus <= 1 else 1 if gpus <= 8 else 2


def attained_bin(attained_gpu_s: float) -> int:
    if attained_gpu_s < BASE_GPU_S:
        return 0
    b = 1 + int(math.log2(attained_gpu_s / BASE_GPU_S) * BINS_PER_OCTAVE)
    return min(b, len(_EDGES) - 1)


def cumulative(samples: Sequence[float]) -> tuple[list[float], list[float]]:
    """(F, T) at every bin edge plus a last virtual edge at infinity: the fraction of ``samples`` that are
    <= the edge, and their sum divided by the number of samples (so mixtures are weighted sums)."""
    edges = _EDGES
    nb = len(edges)
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return [0.0] * (nb + 1), [0.0] * (nb + 1)
    count = [0.0] * (nb + 1)
    total = [0.0] * (nb + 1)
    k, acc = 0, 0.0
    for j, e in enumerate(edges):
        while k < n and xs[k] <= e:
            acc += xs[k]
            k += 1
        count[j], total[j] = k / n, acc / n
    count[nb], total[nb] = 1.0, (acc + sum(xs[k:])) / n
    return count, total


def index_at(i: int, count: Sequence[float], total: Sequence[float]) -> float:
    """Gittins index at the lower edge of bin ``i`` for the distribution given by ``cumulative``."""
    edges = _EDGES
    nb = len(edges)
    a, ci, ti = edges[i], count[i], total[i]
    best = 0.0
    for j in range(i + 1, nb + 1):
        done = count[j] - ci
        if done <= 0:
            continue
        # Expected GPU-seconds spent from a to min(S, b), per job: jobs ending in (a, b] contribute
        # S - a, the rest b - a.
        spent = (total[j] - ti) - a * done
        if j < nb:
            spent += (1.0 - count[j]) * (edges[j] - a)
        if spent > 0 and done / spent > best:
            best = done / spent
    return best


def gittins_table(samples: list[float]) -> list[float]:
    """G at the lower edge of every bin, for the empirical distribution of ``samples`` (GPU-seconds)."""
    edges = _EDGES
    nb = len(edges)
    n = len(samples)
    count, total = cumulative(samples)
    table = [0.0] * nb
    last = -1
    for i in range(nb):
        if n - round(count[i] * n) < MIN_SURVIVORS:
            break
        table[i] = index_at(i, count, total)
        last = i
    if last < 0:
        return []
    # Too few survivors to say more: hold the last reliable value. Jobs this long then tie, and ties go
    # first-come-first-served (no preemption between equals), where a decay like 1/a would share the GPUs
    # round-robin among them and finish all of them late.
    for i in range(last + 1, nb):
        table[i] = table[last]
    return table


class _Built(NamedTuple):
    """One build of a class's table, and the cumulative distribution it came from (for blending)."""

    samples: int
    table: list[float]
    counts: list[float]  # not `count`: a NamedTuple field must not shadow tuple.count
    total: list[float]
    serial: int  # unique per build: what a cohort's cached blend was made from


class AttainedHistory:
    """Completed jobs' GPU time, by size class and by cohort, and Gittins indices built from it."""

    def __init__(self) -> None:
        self._samples: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._tables: dict[int, _Built] = {}
        self._builds = 0
        self._n = 0
        self._cohorts: dict[str, list[float]] = {}
        # cohort -> (its completions and class build when blended, blended F, blended T, index per bin)
        self._cohort_index: dict[str, tuple[tuple[int, int, tuple[int, ...]], list[float], list[float], dict[int, float]]] = {}

    def __len__(self) -> int:
        return self._n

    def record(self, gpus: float, attained_gpu_s: float, cohort: str | None = None) -> None:
        """A job using ``gpus`` (GPU-equivalents per second, see ``gpu_time_rate``) finished after
        attaining ``attained_gpu_s``; ``cohort`` names the batch it was submitted with (see
        ``scheduler/cohort.py``), whose other members it now informs."""
        attained = max(0.0, attained_gpu_s)
        self._samples[size_class(gpus)].append(attained)
        self._n += 1
        if cohort is not None:
            self._cohorts.setdefault(cohort, []).append(attained)

    @property
    def ready(self) -> bool:
        """Enough completions to rank by Gittins index at all (otherwise: plain LAS)."""
        return self._n >= MIN_SAMPLES

    def _built(self, cls: int) -> _Built:
        n = self._n if cls == POOLED else len(self._samples[cls])
        built = self._tables.get(cls)
        if built is not None and n - built.samples < max(REFRESH_MIN, built.samples * REFRESH_FRACTION):
            return built
        if cls == POOLED:
            samples = [x for s in self._samples.values() for x in s]
        else:
            samples = self._samples[cls]
        count, total = cumulative(samples)
        self._builds += 1
        built = _Built(n, gittins_table(samples), count, total, self._builds)
        self._tables[cls] = built
        return built

    def _class_built(self, gpus: float) -> _Built | None:
        cls = size_class(gpus)
        if len(self._samples[cls]) >= MIN_SAMPLES:
            built = self._built(cls)
            if built.table:
                return built
        built = self._built(POOLED)
        return built if built.table else None

    def has_cohort(self, cohort: str | None) -> bool:
        """Whether some member of ``cohort`` has finished (only then does the cohort change an index)."""
        return cohort is not None and cohort in self._cohorts

    def index(self, gpus: float, attained_gpu_s: float, cohort: str | None = None,
              unfinished: tuple[int, ...] = ()) -> float:
        """Gittins index (completions per GPU-second) of a job of ``gpus`` that has attained so much
        GPU time. Only meaningful when ``ready``.

        The distribution is its size class's (all classes pooled while the class has fewer than
        MIN_SAMPLES). When members of its ``cohort`` have finished, it is blended with the cohort's own
        distribution, a Kaplan-Meier estimate from the finished members and the ``unfinished`` ones (the
        GPU-time bins that running or preempted members have reached: they are known to need more). The
        censoring matters: the members that finish first are the short ones, and counting only them
        would call every cohort short. A cohort of k observations weighs k / (k + COHORT_PRIOR_WEIGHT).
        """
        b = attained_bin(attained_gpu_s)
        built = self._class_built(gpus)
        if built is None:  # a function of the bin only, like every other value returned
            return 1.0 / max(_EDGES[b], BASE_GPU_S)
        siblings = self._cohorts.get(cohort) if cohort is not None else None
        edge = _EDGES[b]
        if not siblings or (max(siblings) <= edge and (not unfinished or _EDGES[unfinished[-1]] <= edge)):
            # Nothing finished in its cohort, or it is past everything its cohort has shown: the class
            # alone says what remains.
            return built.table[b]
        key = (len(siblings), built.serial, unfinished)
        cached = self._cohort_index.get(cohort)  # type: ignore[arg-type]
        if cached is None or cached[0] != key:
            count, total = _blend(siblings, unfinished, built.counts, built.total)
            cached = (key, count, total, {})
            self._cohort_index[cohort] = cached  # type: ignore[index]
        per_bin = cached[3]
        value = per_bin.get(b)
        if value is None:
            value = per_bin[b] = index_at(b, cached[1], cached[2])
        return value


def _blend(finished: list[float], unfinished: tuple[int, ...], class_count: list[float],
           class_total: list[float]) -> tuple[list[float], list[float]]:
    """Cumulative (F, T) of the cohort's Kaplan-Meier distribution blended with its class's.

    Unfinished members are censored at the lower edge of the bin they reached. Mass the estimate leaves
    beyond the largest censored observation L follows the class's distribution conditioned on S > L."""
    edges = _EDGES
    nb = len(edges)
    obs = sorted([(x, 0) for x in finished] + [(edges[u], 1) for u in unfinished])
    survival, masses = 1.0, []
    for i, (value, censored) in enumerate(obs):
        if not censored:
            m = survival / (len(obs) - i)
            masses.append((value, m))
            survival -= m
    count = [0.0] * (nb + 1)
    total = [0.0] * (nb + 1)
    k, acc_m, acc_t = 0, 0.0, 0.0
    for j in range(nb + 1):
        limit = edges[j] if j < nb else math.inf
        while k < len(masses) and masses[k][0] <= limit:
            acc_m += masses[k][1]
            acc_t += masses[k][1] * masses[k][0]
            k += 1
        count[j], total[j] = acc_m, acc_t
    if survival > 1e-12:
        last = attained_bin(obs[-1][0])
        beyond = 1.0 - class_count[last]
        for j in range(last + 1, nb + 1):
            if beyond > 1e-12:
                f = (class_count[j] - class_count[last]) / beyond
                t = (class_total[j] - class_total[last]) / beyond
            else:  # the class never ran this long: assume the remaining members end at four times L
                f, t = 1.0, 4.0 * edges[last]
                if j < nb and edges[j] < 4.0 * edges[last]:
                    f = t = 0.0
            count[j] += survival * f
            total[j] += survival * t
    w = len(obs) / (len(obs) + COHORT_PRIOR_WEIGHT)
    return ([w * x + (1 - w) * y for x, y in zip(count, class_count, strict=True)],
            [w * x + (1 - w) * y for x, y in zip(total, class_total, strict=True)])
