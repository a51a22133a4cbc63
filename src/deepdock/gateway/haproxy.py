"""Run HAProxy for the gateway and keep it on the routes it is given, without dropping a connection.

HAProxy runs in master-worker mode (``-W``) in its own process group, its master's pid in the workdir.
``apply`` compares the new routes with the running ones:

- equal: nothing happens (the rollout step calls it every second);
- the same services with other replicas, weights or tokens: the worker's runtime API (admin.sock) does
  it, no reload: ``add server`` (in maintenance, then its health check and the server switched on),
  ``set weight``, ``set server ... addr``, ``add acl``/``del acl`` on the token list, and for a replica
  taken out ``disable server`` then ``del server``, which HAProxy refuses while the server still has
  connections, so it is tried again at every apply until it succeeds;
- a service added or removed, or its path or health check changed: the new configuration is validated
  (``haproxy -c``) and only then swapped in by a reload. The master starts a new worker that takes the
  listening sockets from the old one (``expose-fd listeners``), so no connection is refused; the old
  worker finishes the requests it carries and answers its idle keep-alive connections' next request
  with ``Connection: close`` rather than closing them under a client (``idle-close-on-response``).
  Server states (a replica already DOWN) are saved first and loaded by the new worker.

The configuration file is rewritten after every change, so a reload or a restart starts from the same
state the runtime API left. Servers added at runtime are slower than configured ones in HAProxy 2.6
(~200 µs a request, measured), so once the routes hold still for ``CONSOLIDATE_AFTER_S`` one reload
makes them configured servers.

A master left running by a server that was killed is found by its pid file and stopped on ``start``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from deepdock.errors import GatewayError
from deepdock.gateway.config import CHECK, backend_name, render
from deepdock.gateway.routes import Route

log = logging.getLogger("deepdock.gateway")

START_TIMEOUT_S = 10.0
RELOAD_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 5.0
# A server added through the runtime API costs ~200 µs more a request than a configured one (measured
# on HAProxy 2.6, docs/benchmarks.md): once the routes have held still this long, one reload turns the
# added servers into configured ones. A rollout itself then needs no reload; it is followed by one.
CONSOLIDATE_AFTER_S = 10.0


class Gateway:
    def __init__(self, workdir: Path, *, bind_host: str = "127.0.0.1", port: int, log_port: int,
                 haproxy_bin: str = "haproxy", threads: int = 1, metrics_port: int = 0) -> None:
        self.workdir = Path(workdir)
        # Debian puts haproxy in /usr/sbin, which a non-root PATH often lacks.
        haproxy_bin = shutil.which(haproxy_bin) or shutil.which(haproxy_bin, path="/usr/sbin:/sbin") or haproxy_bin
        self.bind_host, self.port, self.log_port, self.haproxy_bin = bind_host, port, log_port, haproxy_bin
        self.threads, self.metrics_port = threads, metrics_port
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: io.BufferedWriter | None = None
        self._routes: dict[str, Route] = {}
        # (backend, server) taken out of a route, in maintenance until HAProxy lets it be deleted.
        self._deleting: set[tuple[str, str]] = set()
        # When a server was last added through the runtime API (None: every server is a configured one).
        self._added_at: float | None = None
        self._config = self.workdir / "haproxy.cfg"
        self._pidfile = self.workdir / "haproxy.pid"
        self._master_socket = self.workdir / "master.sock"
        self._admin_socket = self.workdir / "admin.sock"

    @property
    def url(self) -> str:
        return f"http://{self.bind_host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start HAProxy with no routes (every path answers 404) and return once the port accepts."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tokens").mkdir(exist_ok=True)
        self._stop_leftover()
        (self.workdir / "servers.state").touch()
        self._write([])
        self._validate(self._config)
        # HAProxy's own messages (a replica going DOWN, reloads) go to a file: a pipe nobody reads would
        # block it once full.
        self._stderr = (self.workdir / "haproxy.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [self.haproxy_bin, "-W", "-S", str(self._master_socket), "-f", str(self._config),
                 "-p", str(self._pidfile)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True)
        except OSError as exc:
            raise GatewayError(f"cannot run {self.haproxy_bin}: {exc} (install Debian's haproxy: "
                               "scripts/install.sh does)") from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                lines = (self.workdir / "haproxy.log").read_text(errors="replace").splitlines()
                err = "; ".join(line.split(":", 1)[-1].strip() for line in lines if "[ALERT]" in line) or \
                    "\n".join(lines[-10:])
                self._process = None
                self._stderr.close() if self._stderr else None
                raise GatewayError(f"haproxy exited at start: {err.strip()[-800:]}")
            # The worker answering its runtime API, not just the port accepting: the port may be someone
            # else's (then HAProxy exits on its bind error a moment later), and the master creates the
            # admin socket before it binds the frontend.
            if _accepts(self.bind_host, self.port) and self._admin_ready():
                self._routes = {}
                return
            time.sleep(0.02)
        self.stop()
        raise GatewayError(f"haproxy did not listen on {self.bind_host}:{self.port} within {START_TIMEOUT_S:g}s")

    def stop(self) -> None:
        """Soft-stop (the workers finish their requests), then kill what is left; no process outlives it."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGUSR1)
            process.wait(timeout=STOP_TIMEOUT_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        if self._stderr is not None:
            self._stderr.close()
        self._pidfile.unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        try:
            pid = int(self._pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if str(self._config).encode() in cmdline:
            log.warning("stopping the gateway's HAProxy (pid %d) left by an earlier server", pid)
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    # -- routes -------------------------------------------------------------------------------------------
    def apply(self, routes: list[Route]) -> str:
        """Make HAProxy serve ``routes``. Returns "unchanged"; "runtime" when the runtime API did it (weights,
        replicas added or removed, tokens: no reload, no connection touched); or "reloaded" (a service
        added or removed, or a changed path or health check)."""
        if not self.running:
            raise GatewayError("the gateway is not running")
        self._finish_deletions()
        wanted = {r.key: r for r in routes}
        if wanted == self._routes:
            if self._added_at is not None and time.monotonic() - self._added_at >= CONSOLIDATE_AFTER_S \
                    and not self._deleting:
                self._reload(routes)  # the servers added at runtime become configured ones
                self._added_at = None
                return "reloaded"
            return "unchanged"
        if {k: _shape(r) for k, r in wanted.items()} != {k: _shape(r) for k, r in self._routes.items()}:
            self._reload(routes)
            self._routes, self._deleting, self._added_at = wanted, set(), None
            return "reloaded"
        for key, route in wanted.items():
            self._change_at_runtime(self._routes[key], route)
        self._write(routes)  # the file follows, so a later reload starts from this state
        self._routes = wanted
        return "runtime"

    def _change_at_runtime(self, old: Route, new: Route) -> None:
        backend = backend_name(new)
        tokens = self.workdir / "tokens" / f"{new.key}.lst"
        for gone in sorted(old.token_hashes - new.token_hashes):
            self._command(f"del acl {tokens} {gone}")
        for added in sorted(new.token_hashes - old.token_hashes):
            self._command(f"add acl {tokens} {added}")
        before = {b.name: b for b in old.backends}
        after = {b.name: b for b in new.backends}
        for name, b in after.items():
            was = before.get(name)
            if was is None:
                if (backend, name) in self._deleting:  # it came back before it could be deleted
                    self._deleting.discard((backend, name))
                    self._command(f"set server {backend}/{name} addr {b.address} port {b.port}")
                    self._command(f"set weight {backend}/{name} {b.weight}")
                    self._command(f"enable server {backend}/{name}")
                    continue
                # A new server starts in maintenance; its check is switched on, then the server.
                self._command(f"add server {backend}/{name} {b.address}:{b.port} weight {b.weight} {CHECK}",
                              expect="New server registered")
                self._command(f"enable health {backend}/{name}")
                self._command(f"enable server {backend}/{name}")
                self._added_at = time.monotonic()
                continue
            if (was.address, was.port) != (b.address, b.port):
                self._command(f"set server {backend}/{name} addr {b.address} port {b.port}")
            if was.weight != b.weight:
                self._command(f"set weight {backend}/{name} {b.weight}")
        for name in before.keys() - after.keys():
            # Maintenance first: no new request goes to it; deleted once its connections are gone.
            self._command(f"disable server {backend}/{name}")
            self._deleting.add((backend, name))
        self._finish_deletions()

    def _finish_deletions(self) -> None:
        """``del server`` is refused while a server still has connections: tried again at every apply."""
        for backend, name in sorted(self._deleting):
            if "Server deleted" in self._admin(f"del server {backend}/{name}"):
                self._deleting.discard((backend, name))

    def _command(self, command: str, expect: str = "") -> None:
        reply = self._admin(command).strip()
        if (expect and expect not in reply) or (not expect and reply):
            raise GatewayError(f"haproxy refused {command!r}: {reply[:400]}")

    def server_states(self) -> dict[tuple[str, str], dict[str, str]]:
        """(route key, server) → HAProxy's view of it: ``status`` (UP, DOWN, MAINT...) and ``weight``."""
        keys = {backend_name(r): r.key for r in self._routes.values()}
        rows = csv.DictReader(io.StringIO(self._admin("show stat").lstrip("# ")))
        return {(keys[row["pxname"]], row["svname"]): {"status": row["status"].split()[0], "weight": row["weight"]}
                for row in rows if row.get("pxname") in keys and row["svname"] not in ("FRONTEND", "BACKEND")}

    def _reload(self, routes: list[Route]) -> None:
        candidate = self.workdir / "haproxy.cfg.new"
        rendered = self._write(routes, config=candidate)
        self._validate(candidate)
        (self.workdir / "servers.state").write_text(self._admin("show servers state"))
        candidate.replace(self._config)
        before = self.reloads()
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGUSR2)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self.reloads() > before and self._admin_ready():
                    return
            except GatewayError:
                pass  # the master re-executes itself: its socket is briefly gone
            time.sleep(0.02)
        raise GatewayError(f"haproxy did not finish a reload within {RELOAD_TIMEOUT_S:g}s "
                           f"({len(rendered.text)} bytes of configuration)")

    def _write(self, routes: list[Route], config: Path | None = None):  # type: ignore[no-untyped-def]
        rendered = render(routes, workdir=self.workdir, bind_host=self.bind_host, port=self.port,
                          log_port=self.log_port, threads=self.threads, metrics_port=self.metrics_port)
        tokens = self.workdir / "tokens"
        for name, content in rendered.token_files.items():
            _atomic_write(tokens / name, content)
        _atomic_write(config or self._config, rendered.text)
        return rendered

    def _validate(self, config: Path) -> None:
        try:
            check = subprocess.run([self.haproxy_bin, "-c", "-q", "-f", str(config)], capture_output=True,
                                   text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GatewayError(f"cannot run {self.haproxy_bin} -c: {exc}") from None
        if check.returncode != 0:
            raise GatewayError(f"haproxy rejected the gateway configuration: {(check.stderr or check.stdout)[-800:]}")

    # -- sockets ------------------------------------------------------------------------------------------
    def reloads(self) -> int:
        """The master's reload count (``show proc``'s master line: pid, "master", reloads)."""
        for line in _ask(self._master_socket, "show proc").splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "master":
                return int(fields[2])
        return -1

    def _admin_ready(self) -> bool:
        """Whether a worker answers the runtime API (an empty answer: the master went away meanwhile)."""
        try:
            return "Name:" in self._admin("show info")
        except GatewayError:
            return False

    def _admin(self, command: str) -> str:
        return _ask(self._admin_socket, command)


def _shape(route: Route) -> tuple[str, str]:
    """What only a reload changes: the service's path and its health check (all else has a runtime command)."""
    return route.path_name, route.health_path


def _ask(path: Path, command: str) -> str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(SOCKET_TIMEOUT_S)
            sock.connect(str(path))
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)  # one command: the master's CLI answers once the input ends
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise GatewayError(f"haproxy's {path.name} did not answer {command.split()[0]!r}: {exc}") from None
    return b"".join(chunks).decode(errors="replace")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
