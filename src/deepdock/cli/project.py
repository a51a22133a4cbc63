"""``deepdock project ls | quota | paths | allow-path | revoke-path``: projects, their guaranteed quotas
and the host paths their jobs may bind-mount."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from deepdock.cli.output import api_errors, client, console, human_bytes, size_option

project_app = typer.Typer(help="Projects and quotas.", no_args_is_help=True)


@project_app.command("ls")
def project_ls() -> None:
    """Projects you can see, with quotas."""
    with api_errors(), client() as c:
        projects = c.projects()
    table = Table("PROJECT", "QUOTA CPUS", "QUOTA MEMORY", "QUOTA GPUS")
    for p in projects:
        table.add_row(p.name, str(p.quota_cpus or "-"), human_bytes(p.quota_memory), str(p.quota_gpus or "-"))
    console.print(table)


@project_app.command("allow-host-network")
def project_allow_host_network(
    name: str,
    revoke: Annotated[bool, typer.Option("--revoke", help="forbid it again")] = False,
) -> None:
    """Let the project's gangs use the nodes' own network, so they span nodes (admin only). It also
    reaches the nodes' own services: grant it to trusted projects (docs/security.md)."""
    with api_errors(), client() as c:
        c.set_host_network(name, allowed=not revoke)
    console.print(f"project {name}: host networking {'forbidden' if revoke else 'allowed'}")


@project_app.command("quota")
def project_quota(name: str, cpus: float | None = None, memory: str | None = None, gpus: float | None = None) -> None:
    """Set a project's guaranteed quota (idle capacity beyond it may be borrowed)."""
    memory_bytes = size_option(memory, "--memory") if memory else None
    with api_errors(), client() as c:
        c.set_quota(name, cpus=cpus, memory=memory_bytes, gpus=gpus)
    console.print(f"project {name}: quota set")


@project_app.command("paths")
def project_paths(name: str) -> None:
    """Host paths the project's jobs may bind-mount (under each prefix; read-only unless writable)."""
    with api_errors(), client() as c:
        grants = c.host_paths(name)
    table = Table("PREFIX", "ACCESS", "GRANTED BY")
    for g in grants:
        table.add_row(g.prefix, "read-write" if g.writable else "read-only", g.granted_by)
    console.print(table)


@project_app.command("allow-path")
def project_allow_path(
    name: str,
    prefix: str,
    writable: Annotated[bool, typer.Option("--writable", help="jobs may also mount it read-write")] = False,
) -> None:
    """Let the project's jobs bind-mount PREFIX and what lies below it (admins only)."""
    with api_errors(), client() as c:
        grant = c.allow_host_path(name, prefix, writable=writable)
    console.print(f"project {name}: may mount {grant.prefix} {'read-write' if grant.writable else 'read-only'}")


@project_app.command("revoke-path")
def project_revoke_path(name: str, prefix: str) -> None:
    """Withdraw a grant (jobs already running keep their mounts until they end)."""
    with api_errors(), client() as c:
        c.revoke_host_path(name, prefix)
    console.print(f"project {name}: may no longer mount {prefix}")


def register(app: typer.Typer) -> None:
    app.add_typer(project_app, name="project")
