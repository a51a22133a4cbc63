"""The ``deepdock`` command. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from deepdock import __version__

app = typer.Typer(
    name="deepdock",
    help="Self-hosted deep learning in containers: environments, jobs, scheduling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print deepdock's version."""
    typer.echo(__version__)


def _register() -> None:
    # Imported here so that one area's optional imports never slow another's commands.
    from deepdock.cli import env as env_cli

    env_cli.register(app)
    try:
        from deepdock.cli import sim as sim_cli
    except ImportError:  # the simulator lands separately
        sim_cli = None
    if sim_cli is not None:
        sim_cli.register(app)
    from deepdock.cli import jobs as jobs_cli

    jobs_cli.register(app)


_register()


if __name__ == "__main__":
    app()
