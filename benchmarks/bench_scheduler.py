"""Decision throughput of one scheduling cycle: 5,000 nodes × 8 GPUs, 10,000 mixed pending jobs, one core.

Compares deepdock's indexed allocator (through a full ``schedule`` call with pending reasons) against a
naive first-fit that scans every node for every replica, in the same run.

    .venv/bin/python benchmarks/bench_scheduler.py [--nodes 5000] [--jobs 10000] [--policy default]
"""

from __future__ import annotations

import argparse
import random
import time

from deepdock.scheduler import GPU, ClusterState, JobRequest, NodeState, Place, Resources, get_policy
from deepdock.scheduler.history import AttainedHistory

GIB = 1024**3
NODE_CPUS = 96.0
NODE_MEMORY = 1024 * GIB
GPUS_PER_NODE = 8
SEED = 7
# (gpus per replica, replicas, cpus per replica, weight)
MIX = [(1, 1, 4, 50), (2, 1, 8, 15), (4, 1, 16, 10), (8, 1, 32, 8), (8, 2, 32, 4), (0.5, 1, 2, 8), (0, 1, 4, 5)]


def make_nodes(n: int) -> list[NodeState]:
    return [NodeState(f"node-{i:05d}", NODE_CPUS, NODE_MEMORY,
                      [GPU(k, "a100", 80 * GIB) for k in range(GPUS_PER_NODE)]) for i in range(n)]


def make_jobs(n: int, seed: int = SEED) -> list[JobRequest]:
    rng = random.Random(seed)
    shapes = [m[:3] for m in MIX]
    weights = [m[3] for m in MIX]
    jobs = []
    for i in range(n):
        gpus, replicas, cpus = rng.choices(shapes, weights)[0]
        jobs.append(JobRequest(f"job-{i:05d}", Resources(cpus, 16 * GIB, float(gpus)), replicas=replicas,
                               priority=rng.choice([0, 0, 0, 1]), submit_time=float(i),
                               project=f"p{rng.randrange(4)}", user=f"u{rng.randrange(16)}"))
        if rng.random() < 0.2:  # preempted earlier: has run and attained GPU time, ranks by it
            executed = rng.uniform(60, 36_000)
            jobs[-1].executed = executed
            jobs[-1].attained_gpu_s = executed * max(gpus * replicas, 1)
            jobs[-1].last_stop_time = float(i)
    return jobs


def make_history(n: int, seed: int = SEED) -> AttainedHistory:
    """Completions with heavy-tailed GPU time (log-normal, median ~1 GPU-hour), as the server keeps."""
    rng = random.Random(seed + 1)
    history = AttainedHistory()
    for _ in range(n):
        gpus = rng.choice([1, 1, 1, 2, 4, 8, 16])
        history.record(float(gpus), gpus * rng.lognormvariate(8.0, 2.0))
    return history


def naive_first_fit(nodes: list[NodeState], jobs: list[JobRequest]) -> int:
    """Linear scan of every node per replica (what an unindexed scheduler does)."""
    cpus = [n.cpus for n in nodes]
    mem = [n.memory for n in nodes]
    free = [[1.0] * len(n.gpus) for n in nodes]
    placed = 0
    for job in sorted(jobs, key=lambda j: (-j.priority, j.submit_time)):
        r = job.resources
        taken: list[tuple[int, list[int], float]] = []
        for _ in range(job.replicas):
            for i in range(len(nodes)):
                if cpus[i] < r.cpus or mem[i] < r.memory:
                    continue
                if r.gpus >= 1:
                    idx = [k for k, f in enumerate(free[i]) if f >= 1.0][: int(r.gpus)]
                    if len(idx) < int(r.gpus):
                        continue
                    amount = 1.0
                elif r.gpus > 0:
                    idx = [k for k, f in enumerate(free[i]) if f >= r.gpus][:1]
                    if not idx:
                        continue
                    amount = r.gpus
                else:
                    idx, amount = [], 0.0
                cpus[i] -= r.cpus
                mem[i] -= r.memory
                for k in idx:
                    free[i][k] -= amount
                taken.append((i, idx, amount))
                break
            else:
                for i, idx, amount in taken:  # gang: all or nothing
                    cpus[i] += r.cpus
                    mem[i] += r.memory
                    for k in idx:
                        free[i][k] += amount
                taken = []
                break
        if taken:
            placed += 1
    return placed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--policy", default="default")
    ap.add_argument("--history", type=int, default=2000,
                    help="finished jobs in the attained-GPU-time history the default policy ranks by (0: none, LAS)")
    args = ap.parse_args()
    nodes = make_nodes(args.nodes)
    jobs = make_jobs(args.jobs)
    history = make_history(args.history) if args.history else None
    gpus_wanted = sum(j.resources.gpus * j.replicas for j in jobs)
    print(f"{args.nodes} nodes × {GPUS_PER_NODE} GPUs, {args.jobs} pending jobs wanting {gpus_wanted:,.0f} GPUs")

    started = time.perf_counter()
    decisions = get_policy(args.policy).schedule(ClusterState(nodes, history=history), jobs, 0.0)
    ours_s = time.perf_counter() - started
    placed = sum(1 for d in decisions if isinstance(d, Place))

    started = time.perf_counter()
    naive_placed = naive_first_fit(nodes, jobs)
    naive_s = time.perf_counter() - started

    print(f"deepdock {args.policy}: {placed} placed, {len(decisions)} decisions in {ours_s:.3f} s "
          f"= {placed / ours_s:,.0f} placements/s, {len(decisions) / ours_s:,.0f} decisions/s")
    print(f"naive linear first-fit: {naive_placed} placed in {naive_s:.3f} s "
          f"= {naive_placed / naive_s:,.0f} placements/s")
    print(f"speed-up: {(placed / ours_s) / (naive_placed / naive_s):.1f}×")


if __name__ == "__main__":
    main()
