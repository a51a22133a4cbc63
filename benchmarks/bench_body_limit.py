"""Request body limits: what a 300 MB body to POST /api/v1/jobs costs a real server.

    .venv/bin/python -m benchmarks.bench_body_limit [--mb 300] [--repeat 3] [--workers N] [--no-baseline]

One `deepdock server` (its default API workers) gets, over a raw socket so that nothing on the client side
buffers or retries:
- ``declared``: 300 MB with ``Content-Length`` (refused from the headers alone);
- ``chunked``: 300 MB as ``Transfer-Encoding: chunked`` from a generator (refused once 1 MiB is read);
- ``valid_size``: a body of ``max_request_bytes - 1`` bytes, which must reach the route (422: its spec has
  an unknown field), for comparison.
Figures per case: the status, the body bytes the client got into its socket before the answer (what the
server read is at most that), the time from the first byte sent to the answer, and the server's RSS
growth, two ways: ``rss_growth_mib``, the peak of the RSS summed over the server and its worker processes
(read from /proc every 20 ms) minus its level just before the send; and ``rss_peak_growth_mib``, each
process's own peak RSS (VmHWM, reset through /proc/PID/clear_refs just before the send) summed, minus the
RSS at the reset, which catches a spike shorter than the sampling interval (the refusals take a few ms).

Baseline in the same run (``--no-baseline`` skips it): a second server with the limit lifted
(``DEEPDOCK_MAX_REQUEST_BYTES`` = 2**62, i.e. the behaviour before the limits) takes the same declared
300 MB send.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._server import BenchServer
from deepdock.settings import Settings

MIB = 1024 * 1024
PIECE = 256 * 1024
SAMPLE_S = 0.02
PAGE = os.sysconf("SC_PAGE_SIZE")
# A valid JSON document whose spec has an unknown field: a server that reads it all answers 422.
PREFIX = b'{"spec": {"name": "big", "image": "busybox:latest", "command": ["true"], "padding": "'
SUFFIX = b'"}}'


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass  # exited
    return total


def reset_peaks(pids: list[int]) -> bool:
    """Reset each process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0; our own processes)."""
    try:
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(pids: list[int]) -> int:
    """The sum of each process's peak RSS since its last reset_peaks: at least the peak of the sum, so a
    conservative figure, and one that no sampling interval can miss."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return total


class RssSampler:
    """The summed RSS of ``pids`` every 20 ms on a thread; ``mark()`` starts a window, ``peak()`` ends it."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), rss_bytes(self.pids)))
            time.sleep(SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def between(self, t0: float, t1: float) -> list[int]:
        return [rss for t, rss in self.samples if t0 <= t <= t1]


def body(total: int) -> Iterator[bytes]:
    """``total`` bytes of JSON in pieces of 256 KiB, never held whole."""
    pad = total - len(PREFIX) - len(SUFFIX)
    yield PREFIX
    piece = b"x" * PIECE
    while pad > 0:
        yield piece[:pad] if pad < PIECE else piece
        pad -= PIECE
    yield SUFFIX


def send(port: int, token: str, total: int, *, chunked: bool) -> dict[str, Any]:
    """POST ``total`` bytes; stop sending as soon as the server answers or closes. The time runs from the
    first byte sent to the first byte of the answer."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n").encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        t0 = time.perf_counter()
        sock.sendall(head)
        try:
            for piece in body(total):
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer (or the close) is in: stop sending
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after answering; the answer is still readable
        response = b""
        answered_at = None
        try:
            while part := sock.recv(65536):
                answered_at = answered_at or time.perf_counter()
                response += part
        except ConnectionResetError:
            pass
    status_line, _, rest = response.partition(b"\r\n")
    error = json.loads(rest.split(b"\r\n\r\n", 1)[1]).get("error", {}) if b"\r\n\r\n" in rest else {}
    return {"status": int(status_line.split()[1]) if status_line else None, "code": error.get("code"),
            "body_bytes_sent": sent, "seconds_to_answer": (answered_at or time.perf_counter()) - t0}


def measure(srv: BenchServer, sampler: RssSampler, total: int, *, chunked: bool) -> dict[str, Any]:
    time.sleep(0.3)
    before = time.monotonic()
    level = statistics.median(sampler.between(before - 0.25, before))
    hwm = reset_peaks(sampler.pids)
    start = rss_bytes(sampler.pids)
    result = send(srv.port, srv.token, total, chunked=chunked)
    time.sleep(0.3)  # what the server does after answering (freeing, or not) counts too
    peak = max(sampler.between(before, time.monotonic()))
    return {**result, "rss_growth_mib": (peak - level) / MIB,
            "rss_peak_growth_mib": (peak_rss_bytes(sampler.pids) - start) / MIB if hwm else None}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": sorted({r["status"] for r in runs}),
        "code": sorted({str(r["code"]) for r in runs}),
        "body_bytes_sent_max": max(r["body_bytes_sent"] for r in runs),
        "seconds_to_answer_median": statistics.median(r["seconds_to_answer"] for r in runs),
        "rss_growth_mib_max": max(r["rss_growth_mib"] for r in runs),
        "rss_peak_growth_mib_max": None if any(r["rss_peak_growth_mib"] is None for r in runs)
        else max(r["rss_peak_growth_mib"] for r in runs),
        "runs": len(runs),
    }


def run_server(home: Path, workers: int, cases: dict[str, tuple[int, bool]], repeat: int,
               **env: str) -> tuple[dict[str, Any], int]:
    # No engine: nothing but the API runs.
    with BenchServer(home, DEEPDOCK_DOCKER_HOST="unix:///nonexistent.sock", DEEPDOCK_WORKERS=str(workers),
                     **env) as srv:
        assert srv.proc is not None
        # Warm up: the first 413 and 422 answers load what they need before anything is measured.
        send(srv.port, srv.token, 2 * MIB, chunked=False)
        send(srv.port, srv.token, 4096, chunked=False)
        pids = process_tree(srv.proc.pid)
        results = {}
        with RssSampler(pids) as sampler:
            idle = rss_bytes(pids)
            for name, (total, chunked) in cases.items():
                results[name] = summary([measure(srv, sampler, total, chunked=chunked) for _ in range(repeat)])
        return results, idle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300, help="size of the large body, in MB (10**6 bytes)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="API worker processes (0: the server's default)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the server with the limit lifted")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    big = args.mb * 1000 * 1000
    limit = Settings().max_request_bytes
    with tempfile.TemporaryDirectory() as tmp:
        limited, idle = run_server(Path(tmp) / "limited", args.workers, {
            "declared": (big, False), "chunked": (big, True), "valid_size": (limit - 1, False)}, args.repeat)
        result: dict[str, Any] = {"body_bytes": big, "max_request_bytes": limit, "workers": args.workers,
                                     "server_rss_idle_mib": idle / MIB, **limited}
        if not args.no_baseline:
            baseline, _ = run_server(Path(tmp) / "unlimited", args.workers, {"declared": (big, False)}, 1,
                                     DEEPDOCK_MAX_REQUEST_BYTES=str(2**62))
            result["baseline_limit_lifted"] = baseline["declared"]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
