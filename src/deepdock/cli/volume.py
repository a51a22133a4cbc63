"""``deepdock volume ls | rm``: a project's named volumes on every node."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from deepdock.cli.output import ago, api_errors, client, console

volume_app = typer.Typer(help="Named volumes of your projects.", no_args_is_help=True)


@volume_app.command("ls")
def volume_ls(project: Annotated[str | None, typer.Option(help="only this project")] = None) -> None:
    """Your projects' volumes, per node (a job's `volumes: [{source: NAME, ...}]` creates one)."""
    with api_errors(), client() as c:
        found = c.volumes(project)
    table = Table("PROJECT", "VOLUME", "NODE", "ENGINE NAME", "CREATED")
    for v in found.volumes:
        table.add_row(v.project, v.name, v.node, v.engine_name, ago(v.created_at) if v.created_at else "")
    console.print(table)
    if found.unreachable_nodes:
        console.print(f"not listed (node did not answer): {', '.join(found.unreachable_nodes)}")


@volume_app.command("rm")
def volume_rm(project: str, name: str) -> None:
    """Remove a project's volume and its data from every node (refused while a container uses it)."""
    with api_errors(), client() as c:
        c.remove_volume(project, name)
    console.print(f"volume {project}/{name} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(volume_app, name="volume")
