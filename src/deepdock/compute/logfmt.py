"""Log line timestamps in docker's format, shared by the fake so both backends look alike."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(ts: float) -> str:
    """RFC 3339 with nanoseconds and a Z, as ``docker logs --timestamps`` prints it."""
    whole = datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    # Truncate, never round: rounding could carry into the next second (1e9 nanoseconds).
    nanos = min(int((ts - int(ts)) * 1e9), 999_999_999)
    return f"{whole}.{nanos:09d}Z"


def format_timestamp_prefix(ts: float, chunk: bytes) -> bytes:
    """Prefix every line of ``chunk`` with the time and a space."""
    prefix = (format_timestamp(ts) + " ").encode()
    lines = chunk.splitlines(keepends=True)
    return b"".join(prefix + line for line in lines)
