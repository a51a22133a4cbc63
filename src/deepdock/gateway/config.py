"""The HAProxy configuration for a set of routes (pure: routes in, text and token files out).

One frontend takes ``/services/<name>/...``; each service is a backend that checks the caller's bearer
token (its sha256, against the route's list: HAProxy never sees a token table, only hashes), strips the
token and the ``/services/<name>`` prefix, and balances over the replicas by weight. Replicas are
health-checked on the model server's readiness path; a connection failure, an empty response or a 503 is
retried once on another replica, so a replica that dies or drains costs no request. The access log goes
to deepdock's UDP listener in a format ``accesslog.parse`` reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deepdock.errors import GatewayError
from deepdock.gateway.routes import Route

LOG_TAG = "ddgw"
# Backend, server, status, total active ms, server response ms, termination state: parse() reads these.
LOG_FORMAT = f"{LOG_TAG} %b %s %ST %Ta %Tr %ts"
UNKNOWN_BACKEND = "no_such_service"
BACKEND_PREFIX = "svc_"
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Checks: a replica is out after two failed probes a second apart and back after one good one.
CHECK = "check inter 1s fall 2 rise 1"


@dataclass(frozen=True)
class Rendered:
    text: str
    token_files: dict[str, str]  # file name (under the workdir's tokens/) → its content


def backend_name(route: Route) -> str:
    return BACKEND_PREFIX + route.key


def render(routes: list[Route], *, workdir: Path, bind_host: str, port: int, log_port: int, threads: int = 1,
           metrics_port: int = 0) -> Rendered:
    for route in routes:
        for name in (route.key, route.path_name, *(b.name for b in route.backends)):
            if not _SAFE.match(name):
                raise GatewayError(f"route {route.key!r}: {name!r} is not a valid HAProxy name")
    tokens = workdir / "tokens"
    lines = [
        "global",
        f"    stats socket {workdir / 'admin.sock'} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    server-state-file {workdir / 'servers.state'}",
        f"    log 127.0.0.1:{log_port} len 1024 format raw local0 info",
        "    maxconn 8192",
        # One thread by default: a request crosses no thread, and one HAProxy thread carries tens of
        # thousands of requests a second, far beyond what model replicas answer. On 2 vCPUs, 2 threads
        # measured ~370 µs added at p50 against ~80 µs with 1 (docs/benchmarks.md).
        f"    nbthread {threads}",
        # After a reload the old worker finishes what it carries, for at most this long.
        "    hard-stop-after 120s",
        "",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        "    timeout connect 2s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout check 2s",
        "    retries 2",
        "    retry-on conn-failure empty-response 503",
        "    option redispatch 1",
        # On a reload the old worker answers an idle keep-alive connection's next request (with
        # Connection: close) instead of closing it under a client that is about to send one.
        "    option idle-close-on-response",
        "    load-server-state-from-file global",
        "    http-error status 503 content-type application/json string "
        "'{\"error\":\"no ready replica of this service\"}'",
        "",
        "frontend services",
        f"    bind {bind_host}:{port}",
        # Only the hash of a bearer token travels further (the backend compares it with the route's list).
        "    http-request set-var(txn.caller) req.hdr(authorization),bytes(7),sha2(256),hex,lower "
        'if { req.hdr(authorization) -m beg -i "Bearer " }',
    ]
    for route in routes:
        acl = f"to_{route.key}"
        lines += [f"    acl {acl} path /services/{route.path_name}",
                  f"    acl {acl} path_beg /services/{route.path_name}/",
                  f"    use_backend {backend_name(route)} if {acl}"]
    lines += [f"    default_backend {UNKNOWN_BACKEND}", ""]
    if metrics_port:
        # HAProxy's own Prometheus exporter: requests, responses by code class and timings per service
        # (backend) and per replica (server, its name carrying the revision).
        lines += ["frontend gateway_metrics",
                  f"    bind {bind_host}:{metrics_port}",
                  "    no log",
                  "    http-request use-service prometheus-exporter if { path /metrics }",
                  "    http-request return status 404 content-type text/plain string 'see /metrics'", ""]
    lines += [
              f"backend {UNKNOWN_BACKEND}",
              "    http-request return status 404 content-type application/json string '{\"error\":\"no such service\"}'",
              ""]
    token_files: dict[str, str] = {}
    for route in routes:
        token_file = f"{route.key}.lst"
        token_files[token_file] = "".join(f"{h}\n" for h in sorted(route.token_hashes))
        lines += [
            f"backend {backend_name(route)}",
            "    balance roundrobin",
            "    option httpchk",
            f"    http-check send meth GET uri {route.health_path}",
            "    http-check expect status 200",
            "    http-request return status 401 content-type application/json string "
            f"'{{\"error\":\"this service needs the bearer token of a member of its project\"}}' "
            f"unless {{ var(txn.caller) -m str -f {tokens / token_file} }}",
            "    http-request del-header authorization",
            f"    http-request replace-path ^/services/{route.path_name}/?(.*)$ /\\1",
        ]
        lines += [f"    server {b.name} {b.address}:{b.port} weight {b.weight} {CHECK}" for b in route.backends]
        lines.append("")
    return Rendered("\n".join(lines) + "\n", token_files)
