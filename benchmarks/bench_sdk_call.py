"""What one ``sdk.log_metrics`` call per step costs a small training loop, without Docker (issue 12).

    .venv/bin/python -m benchmarks.bench_sdk_call [--epochs 600] [--repeats 3] [--modes none,noop,sdk]

bench_tracking's overhead loop itself (``OVERHEAD``: the digits MLP, batches of 64, Adam, epochs
alternating with and without a call per step; here on random data of the digits' shape, since the product
venv has no scikit-learn) with one torch thread, on one core (``sched_setaffinity``). The SDK runs as
inside a job: its output goes to a pipe drained by a ``cat`` on another core, as the engine's log pipeline
would. The figure is the median epoch with the calls against the median epoch without (and each calling
epoch against the plain one after it). Modes, each in a fresh process:

- ``none``: no call on either side (the noise floor);
- ``noop``: ``lambda step, **kw: None`` (what any call costs: the kwargs dict, the frame);
- ``sdk``: ``deepdock.sdk.log_metrics`` (its hot path, the flusher thread's encoding and writes).

Why beside bench_tracking's in-job figure: this one isolates the call from the platform (no engine, no
server on the same cores), so a change to the SDK can be measured in seconds and its cost told apart
from the machine's. Needs torch in the venv (``pip install torch==2.13.0``) and two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.bench_tracking import OVERHEAD


def _train(mode: str, epochs: int) -> dict[str, Any]:
    os.environ.update({"DEEPDOCK_JOB_ID": "bench-sdk-call", "EPOCHS": str(epochs), "DEEPDOCK_CPUS": "1",
                       "BENCH_DATA": "random", "BENCH_CALL": mode})
    cores = sorted(os.sched_getaffinity(0))
    read_end, write_end = os.pipe()
    drain = subprocess.Popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL,
                             preexec_fn=lambda: os.sched_setaffinity(0, cores[:1]))
    os.close(read_end)
    os.sched_setaffinity(0, cores[-1:])
    from deepdock.sdk import tracking
    tracking.CONTAINER_STDOUT = f"/proc/self/fd/{write_end}"  # in place of PID 1's stdout, as in a job
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(OVERHEAD, "overhead.py", "exec"), {"__name__": "__main__"})
    drain.kill()
    result: dict[str, Any] = json.loads(printed.getvalue().split("RESULT ")[1].splitlines()[0])
    return {"mode": mode, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=600, help="epochs per process, half of them calling")
    parser.add_argument("--repeats", type=int, default=3, help="processes per mode, interleaved")
    parser.add_argument("--modes", default="none,noop,sdk")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: train in this mode, print its result
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_train(args.one, args.epochs)), flush=True)
        return
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: one for the loop, one for the output's reader")
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for mode in args.modes.split(","):
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_sdk_call", "--one", mode, "--epochs", str(args.epochs)],
                                 check=True, capture_output=True, text=True).stdout
            runs.setdefault(mode, []).append(json.loads(out.strip().splitlines()[-1]))
    summary = {mode: {"overhead_pct": [r["overhead_pct"] for r in results],
                      "paired_overhead_pct": [r["paired_overhead_pct"] for r in results],
                      "median_overhead_pct": statistics.median(r["overhead_pct"] for r in results),
                      "epoch_ms": statistics.median(r["epoch_ms_without_sdk"] for r in results)}
               for mode, results in runs.items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
