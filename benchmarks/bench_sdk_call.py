"""What one ``sdk.log_metrics`` call per step costs a small training loop, without Docker (issue 12).

    .venv/bin/python -m benchmarks.bench_sdk_call [--epochs 600] [--repeats 3] [--modes none,noop,sdk]

The digits MLP's loop (bench_tracking's overhead job: 1,797 rows of 64 features, batches of 64, Adam; the
data here is random of that shape, since the product venv has no scikit-learn) with one torch thread, on
one core (``sched_setaffinity``), epochs alternating with and without a call per step; the figure is the
median epoch with the calls against the median epoch without (and each calling epoch against the plain
one after it). The SDK runs as inside a job: its output goes to a pipe drained by a ``cat`` on another
core, as the engine's log pipeline would. Modes, each in a fresh process:

- ``none``: no call on either side (the noise floor);
- ``noop``: ``lambda step, **kw: None`` (what any call costs: the kwargs dict, the frame);
- ``sdk``: ``deepdock.sdk.log_metrics`` (its hot path, the flusher thread's encoding and writes).

Why beside bench_tracking's in-job figure: this one isolates the call from the platform (no engine, no
server on the same cores), so a change to the SDK can be measured in seconds and its cost told apart
from the machine's. Needs torch in the venv (``pip install torch==2.13.0``) and two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def _train(mode: str, epochs: int) -> dict[str, Any]:
    os.environ["DEEPDOCK_JOB_ID"] = "bench-sdk-call"
    cores = sorted(os.sched_getaffinity(0))
    read_end, write_end = os.pipe()
    drain = subprocess.Popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL,
                             preexec_fn=lambda: os.sched_setaffinity(0, cores[:1]))
    os.close(read_end)
    os.sched_setaffinity(0, cores[-1:])
    from deepdock.sdk import tracking
    tracking.CONTAINER_STDOUT = f"/proc/self/fd/{write_end}"
    log = {"none": None, "noop": lambda step, **kw: None, "sdk": tracking.log_metrics}[mode]
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.rand(1797, 64, generator=generator), torch.randint(0, 10, (1797,), generator=generator)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10))
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=3e-3), torch.nn.CrossEntropyLoss()
    times: dict[bool, list[float]] = {True: [], False: []}
    step = 0
    for epoch in range(epochs):
        calling = epoch % 2 == 0
        started = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            loss.backward()
            opt.step()
            step += 1
            values = {"loss": loss.item(), "train_acc": (logits.argmax(dim=1) == y[idx]).float().mean().item()}
            if calling and log is not None:
                log(step, **values)
        times[calling].append(time.perf_counter() - started)
    tracking.flush()
    drain.kill()
    with_calls, without = statistics.median(times[True][2:]), statistics.median(times[False][2:])
    paired = statistics.median(a / b - 1 for a, b in zip(times[True][2:], times[False][2:], strict=False))
    return {"mode": mode, "epoch_ms": round(without * 1000, 3), "steps_per_epoch": -(-len(x) // 64),
            "overhead_pct": round((with_calls / without - 1) * 100, 2), "paired_overhead_pct": round(paired * 100, 2)}


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
                      "epoch_ms": statistics.median(r["epoch_ms"] for r in results)}
               for mode, results in runs.items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
