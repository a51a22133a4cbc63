"""``deepdock project ls | quota``: projects and their guaranteed quotas."""

from __future__ import annotations

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


@project_app.command("quota")
def project_quota(name: str, cpus: float | None = None, memory: str | None = None, gpus: float | None = None) -> None:
    """Set a project's guaranteed quota (idle capacity beyond it may be borrowed)."""
    memory_bytes = size_option(memory, "--memory") if memory else None
    with api_errors(), client() as c:
        c.set_quota(name, cpus=cpus, memory=memory_bytes, gpus=gpus)
    console.print(f"project {name}: quota set")


def register(app: typer.Typer) -> None:
    app.add_typer(project_app, name="project")
