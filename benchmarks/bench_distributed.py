"""Distributed (gang) jobs on several Docker hosts, each figure against its baseline in the same run.

    .venv/bin/python -m benchmarks.bench_distributed [--only gang-start|allreduce|failure] [--json OUT]
        [--repeats 7] [--failures 3] [--rounds 5] [--torch-image IMAGE] [--torch-python PATH]

The hosts are two network namespaces of this machine, each with its own dockerd (scripts/netns_hosts.sh:
ddh1 at 10.231.0.11, ddh2 at 10.231.0.12, joined by a bridge). The benchmark starts them, and stops
them at the end (hosts already up are reused, and stopped too). Needs root, dockerd, a static busybox.

- **gang-start**: a real deepdock server (subprocess, SQLite, the product's loop intervals) with ddh1 and
  ddh2 as nodes (its own engine drained) and the project granted host networking. A job of 4 replicas of
  the busybox test image (``sleep 30``, 0.9 CPU and 32 MiB each: a host has 2 CPUs, so exactly 2 ranks fit
  per host and the gang spans both), timed from submit to the job RUNNING (which the server writes once
  every rank's container has started), seen by the client polling ``GET /jobs/J/status``; also on the
  server's clock (RUNNING event - submit) and on the engines' (the last container's ``StartedAt`` -
  submit). Each job is stopped (and STOPPED) before the next submit. Baseline: the same 4 containers
  (same image, command, limits, init, host network) created and started with the docker SDK, 2 per
  engine, each in its own thread, timed by the caller.
- **allreduce**: a 100 MB float32 tensor all_reduced with gloo between 2 ranks, one on ddh1 and one on
  ddh2: (a) in containers of the torch image with ``network_mode=host`` (the image is copied to both
  engines at the very start of the run: one ``docker save`` fed to two ``docker load``; ``--torch-image``,
  else the largest ``deepdock/env`` image here with torch 2.13), (b) as bare processes of a torch venv on this
  machine entered into each host's network namespace with ``nsenter --net`` (``--torch-python``; make it
  with ``python3.11 -m venv /tmp/deepdock-bench-torch && /tmp/deepdock-bench-torch/bin/pip install
  torch==2.13.0``, not the project's venv). Both use
  GLOO_SOCKET_IFNAME=dd0 and MASTER_ADDR=10.231.0.11; each run does 2 warm-up and 5 timed all_reduces
  (a barrier before each); the figure is the median all_reduce. Rounds alternate container/bare.
- **failure**: through the server, a 2-replica gang (busybox ``sleep 600``, 1.5 CPU each so one rank per
  host); once RUNNING, rank 1's container is SIGKILLed on its engine (docker ``kill``); timed from the kill
  to the job FAILED and to rank 0's container no longer running, each polled every 20 ms.

Every container the benchmark or the server makes is labelled ``deepdock.test=bench-distributed`` and
removed at the end, as are the images it put on the namespace engines, the server and its home.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from tests.integration.netns import (
    NETNS_IMAGE,
    NamespaceHost,
    api_client,
    engine_answers,
    host,
    hosts_up,
    import_test_image,
    start_engine,
    start_hosts,
    stop_engine,
    stop_hosts,
)
from tests.integration.server_process import ServerProcess

from benchmarks._server import percentile
from deepdock.client import Client
from deepdock.settings import Settings
from deepdock.specs.job import JobSpec

LABEL_KEY = "deepdock.test"
LABEL_VALUE = "bench-distributed"
LABELS = {LABEL_KEY: LABEL_VALUE}
PARTS = ("gang-start", "allreduce", "failure", "node-loss")
TORCH_VERSION = "2.13.0"
DEFAULT_TORCH_PYTHON = "/tmp/deepdock-bench-torch/bin/python"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
POLL_S = 0.02
GANG_REPLICAS = 4
GANG_CPUS = 0.9  # 2 per 2-CPU host: the gang must span both
FAILURE_CPUS = 1.5  # 1 per host
MEMORY = "32m"
ALLREDUCE_BYTES = 100_000_000  # 100 MB of float32
ALLREDUCE_WARMUP = 2
ALLREDUCE_ITERS = 5
ALLREDUCE_PORT = 29650
ALLREDUCE_TIMEOUT_S = 300
IMAGE_COPY_TIMEOUT_S = 600
# The product's own defaults (tests/integration/server_process.py shortens these for the tests).
PRODUCT = Settings.model_fields
SERVER_ENV = {
    "DEEPDOCK_RECONCILE_INTERVAL_S": str(PRODUCT["reconcile_interval_s"].default),
    "DEEPDOCK_NODE_HEALTH_INTERVAL_S": str(PRODUCT["node_health_interval_s"].default),
    "DEEPDOCK_STOP_GRACE_S": str(PRODUCT["stop_grace_s"].default),
    "DEEPDOCK_RETRY_BACKOFF_S": str(PRODUCT["retry_backoff_s"].default),
    "DEEPDOCK_RETRY_BACKOFF_MAX_S": str(PRODUCT["retry_backoff_max_s"].default),
}

ALLREDUCE = r"""
import json, os, statistics, time
from datetime import timedelta
import torch
import torch.distributed as dist
numel, warmup, iters = int(os.environ["BENCH_NUMEL"]), int(os.environ["BENCH_WARMUP"]), int(os.environ["BENCH_ITERS"])
t0 = time.perf_counter()
dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=120))
init_s = time.perf_counter() - t0
rank, world = dist.get_rank(), dist.get_world_size()
x = torch.ones(numel, dtype=torch.float32)
for _ in range(warmup):
    dist.all_reduce(x)
times = []
for _ in range(iters):
    dist.barrier()
    start = time.perf_counter()
    dist.all_reduce(x)
    times.append(time.perf_counter() - start)
expected = float(world ** (warmup + iters))
ok = bool(x[0].item() == expected and x[-1].item() == expected)
print("RESULT " + json.dumps({"rank": rank, "world": world, "torch": torch.__version__, "threads": torch.get_num_threads(),
      "init_s": init_s, "times_s": times, "median_s": statistics.median(times), "correct": ok,
      "ifname": os.environ.get("GLOO_SOCKET_IFNAME", "")}), flush=True)
dist.destroy_process_group()
"""


# -- hosts and images ----------------------------------------------------------------------------------
def _engine_time(stamp: str) -> float:
    """Docker's RFC 3339 nanosecond time as epoch seconds."""
    date, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(date + "+00:00").timestamp() + float(f"0.{frac or '0'}")


def find_torch_image(engine: docker.DockerClient) -> str:
    """The largest ``deepdock/env`` image on this machine's engine whose python has torch 2.13."""
    images = sorted(engine.images.list(name="deepdock/env"), key=lambda i: i.attrs.get("Size", 0), reverse=True)
    for tag in [image.tags[0] for image in images if image.tags]:
        try:
            out = engine.containers.run(tag, ["python", "-c", "import torch; print(torch.__version__)"],
                                        remove=True, network_mode="none", labels=LABELS)
        except docker.errors.DockerException:
            continue
        if out.decode().strip().startswith(TORCH_VERSION):
            return str(tag)
    raise SystemExit(f"no deepdock/env image with torch {TORCH_VERSION} on the local engine: pass --torch-image")


def copy_image(engine: docker.DockerClient, image: str, hosts: list[NamespaceHost]) -> dict[str, Any]:
    """One ``docker save`` on this machine's engine, streamed into ``docker load`` on each host at once."""
    image_id = engine.images.get(image).id
    targets = []
    for h in hosts:
        api = api_client(h)
        try:
            present = any(i["Id"] == image_id for i in api.images(name=image.split(":")[0]))
        finally:
            api.close()
        if not present:
            targets.append(h)
    started = time.perf_counter()
    if targets:
        loads = [subprocess.Popen(["docker", "-H", h.engine_url, "load", "-q"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for h in targets]
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        try:
            while chunk := save.stdout.read(1 << 20):
                for load in loads:
                    assert load.stdin is not None
                    load.stdin.write(chunk)
        finally:
            for load in loads:
                assert load.stdin is not None
                load.stdin.close()
        if save.wait(timeout=IMAGE_COPY_TIMEOUT_S) != 0:
            raise RuntimeError(f"docker save {image} failed")
        for h, load in zip(targets, loads, strict=True):
            assert load.stdout is not None
            out = load.stdout.read().decode(errors="replace")  # `load -q` prints one line
            if load.wait(timeout=IMAGE_COPY_TIMEOUT_S) != 0:
                raise RuntimeError(f"docker load on {h.name} failed: {out}")
    size = engine.images.get(image).attrs.get("Size", 0)
    return {"image": image, "bytes": size, "copied_to": [h.name for h in targets],
            "seconds": round(time.perf_counter() - started, 1)}


def remove_labelled(hosts: list[NamespaceHost]) -> int:
    removed = 0
    for h in hosts:
        if not engine_answers(h):
            continue
        api = api_client(h)
        try:
            for c in api.containers(all=True, filters={"label": f"{LABEL_KEY}={LABEL_VALUE}"}):
                api.remove_container(c["Id"], force=True)
                removed += 1
        finally:
            api.close()
    return removed


def remove_images(hosts: list[NamespaceHost], images: list[str]) -> None:
    for h in hosts:
        if not engine_answers(h):
            continue
        api = api_client(h)
        try:
            for image in images:
                try:
                    api.remove_image(image, force=True)
                except docker.errors.DockerException:
                    pass
        finally:
            api.close()


# -- the server ----------------------------------------------------------------------------------------
class Cluster:
    """A deepdock server whose nodes are the namespace hosts, granted host networking."""

    def __init__(self, hosts: list[NamespaceHost]) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="deepdock-bench-distributed-"))
        self.hosts = hosts
        self.server = ServerProcess(self.home / "home", LABELS, **SERVER_ENV)
        self.client: Client | None = None

    def __enter__(self) -> Client:
        self.server.start()
        self.client = self.server.client()
        if any(n.name == "local" for n in self.client.nodes()):
            self.client.drain_node("local")  # this machine's own engine: only the namespace hosts take jobs
        for h in self.hosts:
            self.client.add_node(h.name, h.engine_url)
        self.client.set_host_network("default", allowed=True)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def _wait_status(c: Client, job_id: str, statuses: set[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(c.status(job_id).status)
        if status in statuses:
            return status
        if status in TERMINAL:
            raise RuntimeError(f"job {job_id} {status}: {c.job(job_id).status_reason}")
        time.sleep(POLL_S)
    raise RuntimeError(f"job {job_id} not {statuses} after {timeout_s}s")


def _spec(name: str, replicas: int, cpus: float, seconds: int) -> JobSpec:
    return JobSpec.model_validate({"name": name, "image": NETNS_IMAGE, "command": ["sleep", str(seconds)],
                                   "replicas": replicas, "network": "host",
                                   "resources": {"cpus": cpus, "memory": MEMORY}})


# -- 1. gang start -------------------------------------------------------------------------------------
def gang_start_deepdock(c: Client, hosts: list[NamespaceHost], repeats: int) -> dict[str, Any]:
    engines = {h.name: api_client(h) for h in hosts}
    spec = _spec("bench-gang", GANG_REPLICAS, GANG_CPUS, 30)
    runs = []
    try:
        for i in range(repeats + 1):  # the first is a warm-up, reported apart
            t0 = time.perf_counter()
            job_id = c.submit(spec).id
            _wait_status(c, job_id, {"RUNNING"})
            client_s = time.perf_counter() - t0
            d = c.job(job_id)
            (attempt,) = d.attempt_list
            events = {str(e.to_status): e.at for e in d.events}
            created, started = [], []
            for r in attempt.replicas:
                assert r.status == "RUNNING" and r.container_id, f"rank {r.rank} is {r.status}"
                info = engines[r.node].inspect_container(r.container_id)
                assert info["State"]["Running"], f"rank {r.rank}'s container is not running"
                created.append(_engine_time(info["Created"]))
                started.append(_engine_time(info["State"]["StartedAt"]))
            placement: dict[str, int] = {}
            for r in attempt.replicas:
                placement[r.node] = placement.get(r.node, 0) + 1
            runs.append({
                "job": job_id, "warmup": i == 0, "client_s": round(client_s, 3),
                "server_s": round(events["RUNNING"] - d.submitted_at, 3),
                "engine_first_created_s": round(min(created) - d.submitted_at, 3),
                "engine_last_created_s": round(max(created) - d.submitted_at, 3),
                "engine_last_start_s": round(max(started) - d.submitted_at, 3),
                "scheduled_s": round(events["SCHEDULED"] - d.submitted_at, 3) if "SCHEDULED" in events else None,
                "starting_s": round(events["STARTING"] - d.submitted_at, 3) if "STARTING" in events else None,
                "network": str(attempt.network), "placement": dict(sorted(placement.items())),
            })
            c.stop(job_id)
            _wait_status(c, job_id, {"STOPPED"})
    finally:
        for api in engines.values():
            api.close()
    timed = [r for r in runs if not r["warmup"]]
    return {"runs": runs, **{f"{key}_{q}": percentile([r[key] for r in timed], n)
                             for key in ("client_s", "server_s", "engine_first_created_s", "engine_last_start_s")
                             for q, n in (("p50", 50), ("p95", 95))}}


def gang_start_baseline(hosts: list[NamespaceHost], repeats: int) -> dict[str, Any]:
    """The same 4 containers straight through the docker SDK, 2 per engine, each in its own thread."""
    resources = _spec("x", 1, GANG_CPUS, 30).resources
    apis = [api_client(hosts[rank % len(hosts)]) for rank in range(GANG_REPLICAS)]

    def start_one(api: docker.APIClient) -> str:
        host_config = api.create_host_config(
            nano_cpus=round(GANG_CPUS * 1e9), mem_limit=resources.memory, memswap_limit=resources.memory,
            pids_limit=resources.pids, shm_size=resources.shm_size, security_opt=["no-new-privileges"],
            cap_drop=["ALL"], init=True, network_mode="host")
        cid = api.create_container(NETNS_IMAGE, ["sleep", "30"], labels=LABELS, host_config=host_config)["Id"]
        api.start(cid)
        return str(cid)

    times = []
    try:
        with ThreadPoolExecutor(max_workers=GANG_REPLICAS) as pool:
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                ids = list(pool.map(start_one, apis))
                elapsed = time.perf_counter() - t0
                if i > 0:
                    times.append(round(elapsed, 3))
                for api, cid in zip(apis, ids, strict=True):
                    api.remove_container(cid, force=True)
    finally:
        for api in apis:
            api.close()
    return {"times_s": times, "p50_s": percentile(times, 50), "p95_s": percentile(times, 95)}


# -- 2. all_reduce -------------------------------------------------------------------------------------
def _allreduce_env(rank: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": host(1).address, "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": "dd0", "BENCH_NUMEL": str(ALLREDUCE_BYTES // 4),
            "BENCH_WARMUP": str(ALLREDUCE_WARMUP), "BENCH_ITERS": str(ALLREDUCE_ITERS)}


def _result(rank: int, out: str) -> dict[str, Any]:
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"rank {rank} printed no result:\n{out[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def allreduce_containers(hosts: list[NamespaceHost], image: str, port: int) -> list[dict[str, Any]]:
    apis = [api_client(h, timeout_s=ALLREDUCE_TIMEOUT_S) for h in hosts[:2]]
    ids: list[str] = []
    try:
        for rank, api in enumerate(apis):
            host_config = api.create_host_config(network_mode="host", init=True)
            cid = api.create_container(image, ["python", "-c", ALLREDUCE], environment=_allreduce_env(rank, port),
                                       labels=LABELS, host_config=host_config)["Id"]
            ids.append(cid)
        for api, cid in zip(apis, ids, strict=True):
            api.start(cid)
        results = []
        for rank, (api, cid) in enumerate(zip(apis, ids, strict=True)):
            code = api.wait(cid, timeout=ALLREDUCE_TIMEOUT_S)["StatusCode"]
            out = api.logs(cid).decode(errors="replace")
            if code != 0:
                raise RuntimeError(f"container rank {rank} exited {code}:\n{out[-3000:]}")
            results.append(_result(rank, out))
        return results
    finally:
        for api, cid in zip(apis, ids, strict=False):
            try:
                api.remove_container(cid, force=True)
            except docker.errors.DockerException:
                pass
        for api in apis:
            api.close()


def allreduce_bare(hosts: list[NamespaceHost], python: str, port: int) -> list[dict[str, Any]]:
    procs = []
    try:
        for rank, h in enumerate(hosts[:2]):
            env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **_allreduce_env(rank, port)}
            procs.append(subprocess.Popen(["nsenter", f"--net=/run/netns/{h.name}", python, "-c", ALLREDUCE],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        results = []
        for rank, proc in enumerate(procs):
            out = proc.communicate(timeout=ALLREDUCE_TIMEOUT_S)[0].decode(errors="replace")
            if proc.returncode != 0:
                raise RuntimeError(f"bare rank {rank} exited {proc.returncode}:\n{out[-3000:]}")
            results.append(_result(rank, out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    # Both ranks time the same collectives; the slower rank's median is the collective's time.
    median_s = max(r["median_s"] for r in results)
    return {"median_s": round(median_s, 4), "gb_per_s": round(ALLREDUCE_BYTES / median_s / 1e9, 3),
            "times_s_rank0": [round(t, 4) for t in results[0]["times_s"]],
            "init_s": round(max(r["init_s"] for r in results), 2), "correct": all(r["correct"] for r in results),
            "torch": results[0]["torch"], "threads": results[0]["threads"]}


def prepare_allreduce(engine: docker.DockerClient, hosts: list[NamespaceHost], image: str | None,
                      python: str) -> tuple[str, dict[str, Any]]:
    """Check the bare torch and copy the image to both hosts (first thing in a run: another session may
    remove an image from this machine's engine, but not from the namespace hosts)."""
    version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    if not version.startswith(TORCH_VERSION):
        raise SystemExit(f"{python} has torch {version}, not {TORCH_VERSION}")
    image = image or find_torch_image(engine)
    return image, copy_image(engine, image, hosts[:2])


def allreduce(hosts: list[NamespaceHost], image: str, python: str, rounds: int) -> dict[str, Any]:
    container_runs, bare_runs = [], []
    port = ALLREDUCE_PORT
    for _ in range(rounds):
        container_runs.append(_summary(allreduce_containers(hosts, image, port)))
        port += 1
        bare_runs.append(_summary(allreduce_bare(hosts, python, port)))
        port += 1
    container_s = statistics.median(r["median_s"] for r in container_runs)
    bare_s = statistics.median(r["median_s"] for r in bare_runs)
    return {"bytes": ALLREDUCE_BYTES, "image": image, "container_runs": container_runs, "bare_runs": bare_runs,
            "container_median_s": round(container_s, 4), "container_gb_per_s": round(ALLREDUCE_BYTES / container_s / 1e9, 3),
            "bare_median_s": round(bare_s, 4), "bare_gb_per_s": round(ALLREDUCE_BYTES / bare_s / 1e9, 3),
            "ratio_container_over_bare": round(bare_s / container_s, 3)}


# -- 3. failure detection ------------------------------------------------------------------------------
def failure_detection(c: Client, hosts: list[NamespaceHost], repeats: int) -> dict[str, Any]:
    engines = {h.name: api_client(h) for h in hosts}
    spec = _spec("bench-fail", 2, FAILURE_CPUS, 600)
    runs = []
    try:
        for _ in range(repeats):
            job_id = c.submit(spec).id
            _wait_status(c, job_id, {"RUNNING"})
            (attempt,) = c.job(job_id).attempt_list
            rank0, rank1 = sorted(attempt.replicas, key=lambda r: r.rank)
            assert rank0.container_id and rank1.container_id
            killed_at = time.perf_counter()
            engines[rank1.node].kill(rank1.container_id)
            failed_s = stopped_s = None
            deadline = killed_at + 120
            while (failed_s is None or stopped_s is None) and time.perf_counter() < deadline:
                if failed_s is None:
                    status = str(c.status(job_id).status)
                    if status in TERMINAL:
                        failed_s = time.perf_counter() - killed_at
                        assert status == "FAILED", f"job {job_id} ended {status}"
                if stopped_s is None:
                    try:
                        running = engines[rank0.node].inspect_container(rank0.container_id)["State"]["Running"]
                    except docker.errors.NotFound:
                        running = False
                    if not running:
                        stopped_s = time.perf_counter() - killed_at
                time.sleep(POLL_S)
            if failed_s is None or stopped_s is None:
                raise RuntimeError(f"job {job_id}: failed after {failed_s}, rank 0 stopped after {stopped_s}")
            d = c.job(job_id)
            r0 = next(r for r in d.attempt_list[-1].replicas if r.rank == 0)
            runs.append({"job": job_id, "nodes": [rank0.node, rank1.node], "to_failed_s": round(failed_s, 3),
                         "to_rank0_stopped_s": round(stopped_s, 3), "both_s": round(max(failed_s, stopped_s), 3),
                         "rank0_exit_code": r0.exit_code, "reason": d.status_reason})
    finally:
        for api in engines.values():
            api.close()
    both = [r["both_s"] for r in runs]
    return {"reconcile_interval_s": float(SERVER_ENV["DEEPDOCK_RECONCILE_INTERVAL_S"]), "runs": runs,
            "median_s": round(statistics.median(both), 3), "max_s": max(both)}


# -- 4. node loss ---------------------------------------------------------------------------------------
# Rank 0 counts epochs, saving a checkpoint after each (the SDK, standard library only: the python base
# image is enough); every rank logs its epoch as a metric; a resumed attempt says where it starts.
COUNTER = """
import os, time
from deepdock import sdk
gang = sdk.distributed()
state = sdk.load_checkpoint() or {"epoch": 0}
print("start at epoch", state["epoch"], flush=True)
for epoch in range(state["epoch"], int(os.environ["EPOCHS"])):
    time.sleep(float(os.environ["EPOCH_S"]))
    sdk.log_metrics(epoch + 1, epoch=float(epoch + 1))
    if gang.is_leader:
        sdk.save_checkpoint({"epoch": epoch + 1}, step=epoch + 1)
print("done", flush=True)
"""
NODE_LOSS_EPOCHS = 40
NODE_LOSS_EPOCH_S = 1.0


def node_loss(c: Client, hosts: list[NamespaceHost], image: str) -> dict[str, Any]:
    """Stop the engine of rank 1's host mid-training; time until the gang runs again on the hosts left,
    and the epochs lost: the last epoch the failed attempt finished (rank 0 on the surviving host goes on
    until the loss is declared; this counter has no collective to block it) minus the epoch the new
    attempt starts at."""
    code = Path(tempfile.mkdtemp(prefix="bench-node-loss-"))
    (code / "main.py").write_text(COUNTER)
    spec = JobSpec.model_validate({
        "name": "bench-node-loss", "image": image, "command": ["python", "main.py"], "code": str(code),
        "replicas": 2, "network": "host", "resources": {"cpus": FAILURE_CPUS, "memory": "128m"},
        "env": {"EPOCHS": str(NODE_LOSS_EPOCHS), "EPOCH_S": str(NODE_LOSS_EPOCH_S)},
        "retry": {"max_retries": 2, "on": ["node_lost"]}})
    job_id = c.run(spec).id
    _wait_status(c, job_id, {"RUNNING"}, timeout_s=300)
    deadline = time.monotonic() + 120
    while len(c.checkpoints(job_id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    (attempt,) = c.job(job_id).attempt_list
    lost = next(h for h in hosts if h.name == attempt.replicas[1].node)
    stopped_at = time.perf_counter()
    stop_engine(lost)
    try:
        while time.perf_counter() - stopped_at < 300:
            d = c.job(job_id)
            if len(d.attempt_list) > 1 and d.status == "RUNNING":
                break
            time.sleep(POLL_S * 5)
        running_again_s = time.perf_counter() - stopped_at
        d = c.job(job_id)
        first, second = d.attempt_list[0], d.attempt_list[-1]
        progress = max(c.series(job_id, "epoch", attempt=first.number).values)
        log, until = "", time.monotonic() + 60
        while "start at epoch" not in log and time.monotonic() < until:
            time.sleep(0.2)
            log = b"".join(c.logs(job_id, rank=0, attempt=second.number)).decode()
        resumed = int(log.split("start at epoch", 1)[1].split()[0]) if "start at epoch" in log else -1
        ended = _wait_status(c, job_id, {"SUCCEEDED"}, timeout_s=NODE_LOSS_EPOCHS * NODE_LOSS_EPOCH_S * 3)
    finally:
        start_engine(lost)
        shutil.rmtree(code, ignore_errors=True)
    return {"lost_host": lost.name, "first_attempt_reason": first.reason,
            "new_nodes": sorted(r.node for r in second.replicas), "running_again_s": round(running_again_s, 2),
            "last_epoch_of_failed_attempt": int(progress), "resumed_at_epoch": resumed,
            "epochs_lost": int(progress) - resumed, "checkpoint_every_epochs": 1, "ended": ended}


# -- report --------------------------------------------------------------------------------------------
def _table(result: dict[str, Any]) -> str:
    rows = [("measure", "deepdock (all_reduce: in containers)", "baseline (docker SDK / bare processes)", "ratio",
             "target")]
    if "gang_start" in result:
        g, b = result["gang_start"]["deepdock"], result["gang_start"]["docker_sdk"]
        rows.append(("gang start, 4 ranks on 2 hosts, p50 (client)", f"{g['client_s_p50']:.3f} s",
                     f"{b['p50_s']:.3f} s", f"{g['client_s_p50'] / b['p50_s']:.2f}x",
                     f"p50 <= 1.5 s {'OK' if g['client_s_p50'] <= 1.5 else 'MISSED'}"))
        rows.append(("gang start p95 (client)", f"{g['client_s_p95']:.3f} s", f"{b['p95_s']:.3f} s", "", ""))
        rows.append(("gang start p50 / p95 (server clock)", f"{g['server_s_p50']:.3f} / {g['server_s_p95']:.3f} s",
                     "", "", ""))
        rows.append(("gang start p50: first container created / last started (engine clock)",
                     f"{g['engine_first_created_s_p50']:.3f} / {g['engine_last_start_s_p50']:.3f} s", "", "", ""))
    if "allreduce" in result:
        a = result["allreduce"]
        rows.append(("all_reduce 100 MB gloo, 2 hosts (median)", f"{a['container_median_s']:.3f} s "
                     f"({a['container_gb_per_s']:.2f} GB/s)", f"{a['bare_median_s']:.3f} s ({a['bare_gb_per_s']:.2f} GB/s)",
                     f"{a['ratio_container_over_bare']:.2f}",
                     f">= 0.8 {'OK' if a['ratio_container_over_bare'] >= 0.8 else 'MISSED'}"))
    if "node_loss" in result:
        n = result["node_loss"]
        rows.append((f"stop {n['lost_host']}'s engine mid-training -> gang RUNNING again on {n['new_nodes']}",
                     f"{n['running_again_s']:.1f} s; resumed at epoch {n['resumed_at_epoch']} of "
                     f"{n['last_epoch_of_failed_attempt']} done: {n['epochs_lost']} lost", "", "",
                     f"<= 1 checkpoint interval {'OK' if 0 <= n['epochs_lost'] <= 1 else 'MISSED'}"))
    if "failure" in result:
        f = result["failure"]
        rows.append((f"kill rank 1 -> FAILED + rank 0 stopped (reconcile {f['reconcile_interval_s']:g} s)",
                     f"median {f['median_s']:.2f} s, max {f['max_s']:.2f} s", "", "",
                     f"<= 10 s {'OK' if f['max_s'] <= 10 else 'MISSED'}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=PARTS)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=7, help="gang starts (after one warm-up)")
    ap.add_argument("--failures", type=int, default=3, help="rank kills")
    ap.add_argument("--rounds", type=int, default=5, help="all_reduce runs of each kind")
    ap.add_argument("--torch-image", help="default: the largest deepdock/env image with torch 2.13 here")
    ap.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="python of a torch 2.13 venv on this machine")
    ap.add_argument("--keep-images", action="store_true", help="leave the images on the namespace engines")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, nsenter)")
    parts = [args.only] if args.only else list(PARTS)
    engine = docker.from_env(timeout=120)
    result: dict[str, Any] = {"run": uuid.uuid4().hex[:8], "server_env": SERVER_ENV,
                              "started": datetime.now().isoformat(timespec="seconds"),
                              "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    hosts: list[NamespaceHost] = []
    images: list[str] = []
    try:
        hosts = start_hosts(3 if "node-loss" in parts else 2)
        remove_labelled(hosts)
        if "allreduce" in parts:
            print("all_reduce: copying the torch image to the hosts ...", file=sys.stderr, flush=True)
            torch_image, result["image_copy"] = prepare_allreduce(engine, hosts, args.torch_image, args.torch_python)
            images.append(torch_image)
        if "gang-start" in parts or "failure" in parts:
            import_test_image(hosts)
            images.append(NETNS_IMAGE)
            with Cluster(hosts) as c:
                result["nodes"] = [{"name": n.name, "cpus": n.cpus, "status": str(n.status)} for n in c.nodes()]
                if "gang-start" in parts:
                    print("gang start: docker SDK baseline ...", file=sys.stderr, flush=True)
                    baseline = gang_start_baseline(hosts, args.repeats)
                    print("gang start: deepdock ...", file=sys.stderr, flush=True)
                    result["gang_start"] = {"replicas": GANG_REPLICAS, "cpus": GANG_CPUS, "memory": MEMORY,
                                            "docker_sdk": baseline,
                                            "deepdock": gang_start_deepdock(c, hosts, args.repeats)}
                if "failure" in parts:
                    print("failure detection ...", file=sys.stderr, flush=True)
                    result["failure"] = failure_detection(c, hosts, args.failures)
        if "node-loss" in parts:
            from deepdock.envs.base import offline_image_name

            python_image = offline_image_name("3.11")
            print(f"node loss: copying {python_image} to the hosts ...", file=sys.stderr, flush=True)
            copy_image(engine, python_image, hosts)
            images.append(python_image)
            with Cluster(hosts) as c:
                result["node_loss"] = node_loss(c, hosts, python_image)
        if "allreduce" in parts:
            print(f"all_reduce: {args.rounds} rounds of each ...", file=sys.stderr, flush=True)
            result["allreduce"] = allreduce(hosts, torch_image, args.torch_python, args.rounds)
    except BaseException as exc:
        result["error"] = repr(exc)
        raise
    finally:
        result["containers_removed_at_end"] = remove_labelled(hosts)
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL_KEY}={LABEL_VALUE}"}):
            container.remove(force=True)
        if images and not args.keep_images:
            remove_images(hosts, images)
        if hosts or hosts_up():
            stop_hosts()
        engine.close()
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result, indent=2))
        print()
        print(_table(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
