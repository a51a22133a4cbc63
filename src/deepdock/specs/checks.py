"""Checks a spec's strings and numbers pass at submit, so that what is accepted can also be started.

Everything here runs in the CLI (when it loads a file) and again in the server (when the API parses the
body), the same way: an input that would only fail seconds later on an engine (a NUL byte in an env
value, ``=`` in a key, a relative workdir, a malformed image reference) is refused with the field's name.
The bounds are far above any real job and far below what overflows a database column or an engine's
int64; they are what keeps ``1e400`` or ``Infinity`` from reaching either.
"""

from __future__ import annotations

import posixpath
import re

# Sizes: 1 PiB is more memory than any node has; int64 bytes overflow at 8 EiB.
MAX_SIZE_BYTES = 2**50
# Durations: a year of runtime; a stop grace of an hour (Docker's stop timeout is whole seconds, and an
# unbounded grace would make a job unstoppable).
MAX_DURATION_S = 366 * 86400.0
MAX_STOP_GRACE_S = 3600.0

# POSIX's portable environment names. '=' or a NUL byte in a key cannot be passed to execve at all.
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_TOTAL_BYTES = 256 * 1024
MAX_ENV_ENTRIES = 512
MAX_COMMAND_ARGS = 4096
MAX_COMMAND_BYTES = 256 * 1024
MAX_PATH_CHARS = 4096
# Variables the platform sets in every container: a job that sets them would be silently overridden
# (or, for the GPU list, would widen its own isolation), so they are refused instead.
RESERVED_ENV = frozenset({"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NVIDIA_VISIBLE_DEVICES",
                          "CUDA_VISIBLE_DEVICES", "DEEPDOCK_JOB_ID", "DEEPDOCK_JOB_NAME", "DEEPDOCK_ATTEMPT",
                          "DEEPDOCK_ARTIFACTS_DIR", "DEEPDOCK_GPU_SHARE", "DEEPDOCK_CHECKPOINT_DIR",
                          "DEEPDOCK_STOP_GRACE_S", "DEEPDOCK_RESUMED_FROM", "DEEPDOCK_DATA_MOUNTS",
                          "LOCAL_RANK", "DEEPDOCK_NNODES", "DEEPDOCK_NODE_RANK", "DEEPDOCK_NPROC_PER_NODE",
                          "DEEPDOCK_NODE_ADDRS", "DEEPDOCK_NODE_ADDR", "DEEPDOCK_NETWORK",
                          "DEEPDOCK_NODE_ADDR_HEX"})
# Kernel file systems a mount or a workdir must not shadow.
KERNEL_PATHS = ("/proc", "/sys", "/dev")

# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_IMAGE_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)
VOLUME_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_image_reference(ref: str) -> str:
    first, _, rest = ref.partition("/")
    # As Docker reads it, a first part is a registry only with a '.' or a port, or as 'localhost';
    # otherwise it is a lowercase path component ('UPPER/case' is not a reference).
    is_domain = bool(rest) and ("." in first or ":" in first or first == "localhost")
    if len(ref) > 255 or not _IMAGE_RE.match(ref) or (rest and not is_domain and not re.match(rf"^{_COMPONENT}$", first)):
        raise ValueError(f"{ref!r} is not a valid image reference (e.g. 'python:3.11-slim' or "
                         "'registry.example.com:5000/team/trainer:1.2')")
    return ref


def check_text(value: str, what: str, max_bytes: int) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    if len(value.encode()) > max_bytes:
        raise ValueError(f"{what} is longer than {max_bytes} bytes")
    return value


def check_env(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_ENTRIES:
        raise ValueError(f"at most {MAX_ENV_ENTRIES} variables")
    total = 0
    for key, value in env.items():
        if not ENV_KEY_RE.match(key):
            raise ValueError(f"{key!r} is not a variable name: letters, digits and '_', not starting with a digit")
        if key in RESERVED_ENV:
            raise ValueError(f"{key} is set by deepdock in every container and cannot be given")
        check_text(value, f"the value of {key}", MAX_ENV_VALUE_BYTES)
        total += len(key) + len(value.encode())
    if total > MAX_ENV_TOTAL_BYTES:
        raise ValueError(f"the variables take {total} bytes; the limit is {MAX_ENV_TOTAL_BYTES}")
    return env


def check_command(command: list[str]) -> list[str]:
    if not command:
        raise ValueError("command must not be empty")
    if len(command) > MAX_COMMAND_ARGS:
        raise ValueError(f"command has {len(command)} arguments; the limit is {MAX_COMMAND_ARGS}")
    for arg in command:
        check_text(arg, "a command argument", MAX_COMMAND_BYTES)
    if sum(len(a.encode()) for a in command) > MAX_COMMAND_BYTES:
        raise ValueError(f"command is longer than {MAX_COMMAND_BYTES} bytes")
    return command


def check_container_path(path: str, what: str) -> str:
    """An absolute, normalised path inside the container that is not '/' nor a kernel file system."""
    check_text(path, what, MAX_PATH_CHARS)
    if not path.startswith("/"):
        raise ValueError(f"{what} must be an absolute path inside the container, got {path!r}")
    if posixpath.normpath(path) != path or "//" in path:
        raise ValueError(f"{what} must be a normalised path (no '..', '.', '//' or trailing '/'), "
                         f"e.g. {posixpath.normpath(path)!r}")
    if path == "/":
        raise ValueError(f"{what} cannot be '/'")
    if is_under(path, KERNEL_PATHS):
        raise ValueError(f"{what} cannot be under {', '.join(KERNEL_PATHS)}")
    return path


def check_host_path(path: str) -> str:
    """The source of a bind mount: absolute and normalised, so the prefix check sees the real path."""
    check_text(path, "a bind mount's source", MAX_PATH_CHARS)
    if posixpath.normpath(path) != path or "//" in path:
        raise ValueError(f"a bind mount's source must be a normalised absolute path, e.g. {posixpath.normpath(path)!r}")
    return path


def is_under(path: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or lies below one (by path component, not by string)."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)
