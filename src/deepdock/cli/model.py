"""``deepdock model ...``: the model registry (versions with lineage, export, aliases with history)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from deepdock.api import ModelVersionOut
from deepdock.api.enums import JobStatus
from deepdock.cli.output import api_errors, client, console, stream_logs, when

model_app = typer.Typer(help="Registered models: versions, lineage, export, aliases.", no_args_is_help=True)
ProjectOpt = Annotated[str | None, typer.Option("--project", help="when the name exists in several of your projects")]


def print_version(v: ModelVersionOut) -> None:
    aliases = f" [bold]({', '.join(v.aliases)})[/bold]" if v.aliases else ""
    console.print(f"[bold]{v.model}:{v.version}[/bold]{aliases}  project {v.project}, by {v.created_by}, {when(v.created_at)}")
    lin = v.lineage
    console.print(f"  job        {lin.get('job')} ({lin.get('job_name')}), attempt {lin.get('attempt')}, "
                  f"rank {lin.get('rank', 0)}")
    console.print(f"  image      {lin.get('image')}  digest {lin.get('image_digest') or '-'}")
    console.print(f"  env lock   {lin.get('env_lock') or '-'}")
    console.print(f"  code       {lin.get('code_sha256') or '-'}")
    for d in lin.get("data") or []:
        console.print(f"  data       {d.get('kind')} {d.get('source')} → {d.get('target')}")
    if v.params:
        console.print("  params     " + ", ".join(f"{k}={val}" for k, val in v.params.items()), highlight=False)
    if v.metrics:
        console.print("  metrics    " + ", ".join(f"{k}={val:.6g}" for k, val in v.metrics.items()), highlight=False)
    if v.signature:
        for side in ("inputs", "outputs"):
            for t in v.signature.get(side) or []:
                console.print(f"  {side[:-1]:<10} {t.get('name')}: {t.get('dtype')} {t.get('shape')}", highlight=False)
    for f in v.files:
        console.print(f"  file       {f.path} ({f.size} bytes, sha256 {f.sha256[:12]})", highlight=False)
    for fmt, info in v.formats.items():
        report = info.get("report", {})
        console.print(f"  format     {fmt}: {info.get('file')} (max abs diff {report.get('max_abs_diff')}, "
                      f"{report.get('inputs_checked')} inputs, {report.get('method')})", highlight=False)


@model_app.command("ls")
def ls(project: ProjectOpt = None) -> None:
    """Models of your projects."""
    with api_errors(), client() as c:
        models = c.models(project)
    table = Table("model", "project", "latest", "aliases", "created")
    for m in models:
        table.add_row(m.name, m.project, str(m.latest_version or "-"),
                      ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())), when(m.created_at))
    console.print(table)


@model_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")], project: ProjectOpt = None,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A model's versions, or one version, with lineage, metrics, signature, files and formats."""
    with api_errors(), client() as c:
        if ":" in ref or "@" in ref:
            versions = [c.model_version(ref, project)]
        else:
            versions = c.model(ref, project).versions
    if as_json:
        console.print_json(json.dumps([v.model_dump(mode="json") for v in versions]))
        return
    for v in versions:
        print_version(v)


@model_app.command("register")
def register_cmd(
    name: Annotated[str, typer.Argument(help="model name")],
    job: Annotated[str, typer.Option("--job", help="the job whose artifact it is")],
    path: Annotated[str, typer.Option("--path", help="the model file among its artifacts")],
    example_input: Annotated[str | None, typer.Option("--example-input", help=".npy artifact: the signature")] = None,
    project: ProjectOpt = None,
    description: Annotated[str, typer.Option(help="what it is")] = "",
) -> None:
    """Register a file a job produced as the next version of NAME."""
    with api_errors(), client() as c:
        version = c.register_model(name, job, path, example_input=example_input, project=project, description=description)
    print_version(version)


@model_app.command("export")
def export(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION or NAME@ALIAS")],
    fmt: Annotated[str, typer.Option("--format", help="torchscript or onnx")],
    generated: Annotated[int, typer.Option(help="random inputs to compare besides the example")] = 1000,
    project: ProjectOpt = None,
    wait: Annotated[bool, typer.Option(help="follow the export job until it ends")] = True,
) -> None:
    """Export in the model's own training image, with a parity check against the eager model."""
    with api_errors(), client() as c:
        out = c.export_model(ref, fmt, generated=generated, project=project)
        console.print(f"export job [bold]{out.job}[/bold] for {out.model}:{out.version} ({out.format})")
        if not wait:
            return
        status = stream_logs(c, out.job)
        if status != JobStatus.SUCCEEDED:
            console.print(f"[red]export {status}[/red]: {c.job(out.job).status_reason}")
            raise typer.Exit(1)
        print_version(c.model_version(f"{out.model}:{out.version}", project))


@model_app.command("containerize")
def containerize(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION or NAME@ALIAS")],
    runtime: Annotated[str | None, typer.Option(help="onnx (a light image, no torch) or torchscript; "
                                                     "default: onnx when exported")] = None,
    project: ProjectOpt = None,
) -> None:
    """Build the version's serving image on this machine's engine (offline): runtime, server and model
    layers, content-addressed; prints the tag."""
    import tempfile
    from pathlib import Path

    from deepdock.envs import connect
    from deepdock.envs.serving_image import NotServable, build_serving_image, choose_runtime
    from deepdock.errors import DeepdockError
    from deepdock.serving.bundle import write_manifest
    from deepdock.serving.runtimes import MODEL_FILES

    with api_errors(), client() as c:
        version = c.model_version(ref, project)
        full = f"{version.model}:{version.version}"
        try:
            chosen, file = choose_runtime(full, version.formats, version.signature, runtime)
        except NotServable as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        with tempfile.TemporaryDirectory(prefix="deepdock-bundle-") as tmp:
            bundle = Path(tmp)
            # The exported file, and the weights the ONNX exporter writes beside a large model.
            for name in [file, *(f.path for f in version.files if f.path == f"{file}.data")]:
                target = bundle / (MODEL_FILES[chosen] if name == file else name)
                with target.open("wb") as out:
                    for chunk in c.model_file(version.model, version.version, name, project):
                        out.write(chunk)
            write_manifest(bundle, version.model, str(version.version), chosen, MODEL_FILES[chosen],
                           version.signature or {})
            try:
                image = build_serving_image(connect(), bundle, chosen, progress=lambda m: console.print(m, highlight=False))
            except DeepdockError as exc:
                console.print(f"[red]{exc.message}[/red]")
                raise typer.Exit(1) from None
    console.print(f"{full} ({chosen}): {image.size / 1e6:.0f} MB, {'cached' if image.cached else 'built'}")
    typer.echo(image.tag)


@model_app.command("alias")
def alias(name: Annotated[str, typer.Argument()], alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
          version: Annotated[int, typer.Argument()], project: ProjectOpt = None) -> None:
    """Point ALIAS (production, staging, any name) at VERSION."""
    with api_errors(), client() as c:
        event = c.set_alias(name, alias_name, version, project)
    console.print(f"{name}@{event.alias}: {event.from_version or '-'} → {event.to_version}")


@model_app.command("history")
def history(name: Annotated[str, typer.Argument()], alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
            project: ProjectOpt = None) -> None:
    """Every move of an alias: who, when, from which version to which."""
    with api_errors(), client() as c:
        events = c.alias_history(name, alias_name, project)
    table = Table("when", "who", "action", "from", "to")
    for e in events:
        table.add_row(when(e.at), e.by, e.action, str(e.from_version or "-"), str(e.to_version or "-"))
    console.print(table)


@model_app.command("rollback")
def rollback(name: Annotated[str, typer.Argument()], alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
             project: ProjectOpt = None) -> None:
    """Move ALIAS back to the version it pointed to before (recorded in its history too)."""
    with api_errors(), client() as c:
        event = c.rollback_alias(name, alias_name, project)
    console.print(f"{name}@{event.alias}: {event.from_version} → {event.to_version} (rolled back)")


@model_app.command("rm")
def rm(ref: Annotated[str, typer.Argument(help="NAME:VERSION")], project: ProjectOpt = None) -> None:
    """Delete one version (refused while an alias points to it)."""
    name, _, number = ref.rpartition(":")
    if not name or not number.isdigit():
        raise typer.BadParameter("give NAME:VERSION")
    with api_errors(), client() as c:
        c.delete_model_version(name, int(number), project)
    console.print(f"deleted {ref}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
