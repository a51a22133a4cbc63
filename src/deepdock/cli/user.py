"""``deepdock user add``: users and their API tokens (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from deepdock.cli.output import api_errors, client, console

user_app = typer.Typer(help="Users and their tokens (admin).", no_args_is_help=True)


@user_app.command("add")
def user_add(name: str, project: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
             admin: bool = False) -> None:
    """Create a user; prints their API token once."""
    with api_errors(), client() as c:
        u = c.create_user(name, projects=project or [], is_admin=admin)
    console.print(f"user {u.name} created; token (shown once): {u.token}")


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
