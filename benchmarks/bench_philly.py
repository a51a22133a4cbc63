"""Philly replay (68,503 jobs, 11 VCs) under every policy in one run, and the default policy's targets.

    .venv/bin/python benchmarks/bench_philly.py [--capacity 0.25] [--workers 2] [--json OUT]

Same as ``deepdock sim --trace philly --philly-capacity 0.25 --policy default --policy fifo ...`` plus a
check of the goals: default mean JCT ≤ Tiresias and ≤ 1.3 × SRTF (oracle); default p99 queueing ≤ FIFO's;
whole replay ≤ 5 minutes of wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from deepdock.settings import get_settings
from deepdock.sim.runner import comparison, load_workload, render_table, run_policies

POLICIES = ["default", "fifo", "fifo-backfill", "sjf", "srtf", "tiresias"]
SRTF_FACTOR = 1.3
WALL_LIMIT_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capacity", type=float, default=0.25)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    workload = load_workload("philly", None, args.capacity, get_settings().philly_dir)
    rows = comparison(run_policies(POLICIES, workload, args.workers))
    wall = time.perf_counter() - started
    console = Console(width=160)
    gpus = sum(len(n.gpus) for p in workload for n in p.nodes)
    jobs = sum(len(p.jobs) for p in workload)
    console.print(render_table(rows, f"Philly replay: {jobs:,} jobs, {gpus} GPUs (capacity × {args.capacity})"))
    by = {r["policy"]: r for r in rows}
    d = by["default"]
    checks = {
        "default mean JCT <= tiresias": d["jct_mean"] <= by["tiresias"]["jct_mean"],
        f"default mean JCT <= {SRTF_FACTOR} x srtf": d["jct_mean"] <= SRTF_FACTOR * by["srtf"]["jct_mean"],
        "default p99 queueing <= fifo": d["queue_p99"] <= by["fifo"]["queue_p99"],
        f"wall time <= {WALL_LIMIT_S:.0f} s": wall <= WALL_LIMIT_S,
    }
    for name, ok in checks.items():
        console.print(f"{'PASS' if ok else 'FAIL'}  {name}")
    console.print(f"default / tiresias mean JCT = {d['jct_mean'] / by['tiresias']['jct_mean']:.3f}; "
                  f"default / srtf = {d['jct_mean'] / by['srtf']['jct_mean']:.3f}")
    console.print(f"wall time {wall:.1f} s with {args.workers} worker(s); CPU seconds per policy: "
                  + ", ".join(f"{r['policy']} {r['cpu_seconds']:.0f}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps({"capacity": args.capacity, "wall_seconds": wall, "results": rows,
                                         "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
