"""What every CLI command shares: the consoles, the one Client factory, the error line, formatting, and
following a job's logs.

Every command that talks to the server gets its Client from ``client()``; tests replace
``client_factory`` with one whose transport is an ``httpx.MockTransport``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from deepdock.api.enums import TERMINAL_JOB_STATUSES, JobStatus
from deepdock.client import Client
from deepdock.errors import DeepdockError
from deepdock.specs.common import parse_bytes

# How often ``stream_logs`` looks at a job between attempts (queued, or about to retry).
WAIT_POLL_S = 0.5

console = Console()
err_console = Console(stderr=True)

client_factory: Callable[[], Client] = Client


def client() -> Client:
    """The Client a command talks to the server through (URL and token from settings or ~/.deepdock)."""
    return client_factory()


@contextmanager
def api_errors() -> Iterator[None]:
    """Any deepdock error becomes one red line and exit status 1 (no traceback for user errors)."""
    try:
        yield
    except DeepdockError as exc:
        # soft_wrap: one line however long (the terminal folds it), so it stays whole when copied or grepped.
        err_console.print(f"[red]error:[/red] {exc.message}", soft_wrap=True)
        raise typer.Exit(1) from None


def size_option(value: str, option: str) -> int:
    """A size typed on the command line (``4g``, ``512m``) in bytes; a bad one is a usage error naming
    the option, not a traceback."""
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def stream_logs(client: Client, job_id: str) -> JobStatus:
    """Follow the job's logs across attempts until it ends; returns its final status."""
    seen_attempt = 0
    while True:
        job = client.job(job_id)
        if job.status in TERMINAL_JOB_STATUSES and job.attempts <= seen_attempt:
            return job.status
        if job.attempts > seen_attempt and job.status != JobStatus.QUEUED:
            seen_attempt = job.attempts
            if seen_attempt > 1:
                err_console.print(f"[yellow]-- attempt {seen_attempt} --[/yellow]")
            write_chunks(client.logs(job_id, follow=True, attempt=seen_attempt))
            continue
        time.sleep(WAIT_POLL_S)


def wait_job(client: Client, job_id: str) -> JobStatus:
    """Poll the job's status (the cheap read) until it ends; returns its final status."""
    while True:
        status = client.status(job_id).status
        if status in TERMINAL_JOB_STATUSES:
            return status
        time.sleep(WAIT_POLL_S)


def write_chunks(chunks: Iterator[bytes]) -> None:
    """Raw log bytes to stdout as they come (not through rich: they are the job's own output)."""
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = max(0.0, time.time() - ts)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.1f}h ago"
    return f"{delta / 86400:.1f}d ago"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
