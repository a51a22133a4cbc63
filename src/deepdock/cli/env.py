"""``deepdock env ...`` and ``deepdock base ...``: environments and their offline base images."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deepdock.errors import DeepdockError
from deepdock.settings import get_settings
from deepdock.specs.env import load_env_spec

# soft_wrap: tags and hashes must stay copy-pasteable, never folded mid-word.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

env_app = typer.Typer(help="Build reproducible, cached environment images from a short spec.",
                      no_args_is_help=True)
base_app = typer.Typer(help="Base images: build them offline from Debian packages.", no_args_is_help=True)

SpecOpt = typer.Option(..., "--file", "-f", help="Environment spec (YAML).", exists=False)
CodeOpt = typer.Option(None, "--code", help="Directory with your code: added as a separate small layer.")


def _fail(exc: DeepdockError) -> None:
    err_console.print(f"[red]error:[/red] {exc.message}", markup=True, highlight=False)
    raise typer.Exit(code=1)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "kB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _stamp(started: float):  # noqa: ANN202 - a tiny progress printer
    def say(message: str) -> None:
        err_console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {message}", highlight=False,
                          markup=True)
    return say


@env_app.command("dockerfile")
def dockerfile_cmd(file: Path = SpecOpt, code: Path | None = CodeOpt) -> None:
    """Print the generated Dockerfile(s) (locks the spec first if its lock is not cached)."""
    from deepdock.envs import code_tree_hash, plan_env, render_code_dockerfile

    try:
        plan = plan_env(load_env_spec(file), progress=_stamp(time.monotonic()))
        typer.echo(f"# image: {plan.tag}")
        typer.echo(plan.dockerfile, nl=False)
        if code is not None:
            typer.echo(f"\n# --- code layer (separate build, context = {code}) ---")
            typer.echo(render_code_dockerfile(plan.tag, code_tree_hash(code)), nl=False)
    except DeepdockError as exc:
        _fail(exc)


@env_app.command("lock")
def lock_cmd(file: Path = SpecOpt,
             json_out: bool = typer.Option(False, "--json", help="Print the lock as JSON.")) -> None:
    """Resolve the spec's requirements and print the lock (name==version + sha256 per wheel)."""
    from deepdock.envs import plan_env

    try:
        plan = plan_env(load_env_spec(file), progress=_stamp(time.monotonic()))
    except DeepdockError as exc:
        _fail(exc)
        return
    if json_out:
        typer.echo(plan.lock.model_dump_json(indent=2))
        return
    console.print(f"{plan.resolved.describe()}\nlock {plan.lock.hash[:16]}  image {plan.tag}", highlight=False)
    table = Table("group", "package", "version", "sha256", "size")
    for group, wheel in plan.lock.wheels():
        table.add_row(group, wheel.name, wheel.version, wheel.sha256[:16], _human(wheel.size))
    console.print(table)


@env_app.command("build")
def build_cmd(
    file: Path = SpecOpt,
    code: Path | None = CodeOpt,
    offline: bool = typer.Option(False, "--offline", help="Never pull; bootstrap a missing base from Debian."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild every layer."),
) -> None:
    """Build the environment image (and the code image on top of it); print the tag."""
    from deepdock.envs import build_env

    started = time.monotonic()
    settings = get_settings()
    try:
        result = build_env(load_env_spec(file), offline=offline, code_dir=code, no_cache=no_cache,
                           progress=_stamp(started), debian_mirror=settings.debian_mirror,
                           wheel_port=settings.wheel_port)
    except DeepdockError as exc:
        _fail(exc)
        return
    state = "cached" if result.cached else "built"
    err_console.print(f"{state} in {result.duration_s:.1f}s", highlight=False)
    typer.echo(result.tag)


@env_app.command("ls")
def ls_cmd() -> None:
    """List the images deepdock built (found by their deepdock.managed label)."""
    from deepdock.envs import connect, managed_images

    try:
        images = managed_images(connect())
    except DeepdockError as exc:
        _fail(exc)
        return
    table = Table("kind", "base", "lock", "size", "created", "tag")
    for image in images:
        labels = image.labels
        kind = "code" if "deepdock.code.hash" in labels else "env"
        for tag in image.tags or ["<untagged>"]:
            table.add_row(kind, labels.get("deepdock.env.base", ""), labels.get("deepdock.env.lock", "")[:12],
                          _human(image.attrs.get("Size", 0)), image.attrs.get("Created", "")[:16], tag)
    console.print(table)


@env_app.command("inspect")
def inspect_cmd(tag: str = typer.Argument(..., help="An image tag, e.g. deepdock/env:<hash>.")) -> None:
    """Show an image's size per layer group: base / system / framework / deps / code."""
    from deepdock.envs import connect, layer_groups

    try:
        groups = layer_groups(connect(), tag)
    except DeepdockError as exc:
        _fail(exc)
        return
    table = Table("group", "size", "layers")
    for g in groups:
        table.add_row(g.name, _human(g.size_bytes), str(g.layers))
    table.add_row("[bold]total[/bold]", _human(sum(g.size_bytes for g in groups)),
                  str(sum(g.layers for g in groups)))
    console.print(table)


@base_app.command("bootstrap")
def bootstrap_cmd(
    python: str = typer.Option("3.11", "--python", help="Python version: 3.11 (bookworm) or 3.13 (trixie)."),
    cuda: str | None = typer.Option(None, "--cuda", help="For a CUDA env: the base is the same python base "
                                    "(framework wheels bring the CUDA runtime); accepted for clarity."),
) -> None:
    """Build the python base image from Debian packages (no registry needed) and tag it."""
    from deepdock.envs import bootstrap_base, connect

    started = time.monotonic()
    try:
        if cuda:
            err_console.print(f"CUDA {cuda}: no CUDA libraries go into the base; the framework's wheels bring "
                              "them and the NVIDIA container runtime injects the driver.", highlight=False)
        name = bootstrap_base(connect(), python, progress=_stamp(started), mirror=get_settings().debian_mirror)
    except DeepdockError as exc:
        _fail(exc)
        return
    typer.echo(name)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")
    app.add_typer(base_app, name="base")
