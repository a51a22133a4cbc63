"""``deepdock server``: run the API and the background loops in this process (or with API workers)."""

from __future__ import annotations

from typing import Annotated

import typer


def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "",
    port: Annotated[int, typer.Option(help="port to listen on")] = 0,
    workers: Annotated[int, typer.Option(help="API worker processes (0 = one per core, at most 4)")] = 0,
) -> None:
    """Run the deepdock server (SQLite + artifacts under ~/.deepdock; the local engine is the first node)."""
    # Imported here: every other command stays free of the server's imports (FastAPI, SQLAlchemy...).
    from deepdock.server.run import serve

    serve(host=host or None, port=port or None, workers=workers or None)


def register(app: typer.Typer) -> None:
    app.command()(server)
