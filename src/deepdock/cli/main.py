"""The ``deepdock`` command. Each noun registers its commands from its own module."""

from __future__ import annotations

import typer

from deepdock import __version__
from deepdock.cli import demo, env, job, model, node, project, server, service, sim, tracking, user, volume

app = typer.Typer(
    name="deepdock",
    help="Self-hosted deep learning in containers: environments, jobs, scheduling, tracking, a model registry, serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print deepdock's version."""
    typer.echo(__version__)


# The order is the order of `deepdock --help` (commands first, then the groups, each in this order).
for noun in (env, sim, server, job, tracking, demo, node, model, service, user, project, volume):
    noun.register(app)


if __name__ == "__main__":
    app()
