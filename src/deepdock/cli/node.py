"""``deepdock node add | ls | gpus | drain | rm``: the Docker engines that run jobs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from deepdock.api.enums import NodeStatus
from deepdock.api.models import NodeOut
from deepdock.cli.output import ago, api_errors, client, console, human_bytes

node_app = typer.Typer(help="Docker engines that run jobs.", no_args_is_help=True)


@node_app.command("add")
def node_add(
    name: str,
    engine: Annotated[str, typer.Option("--engine", help="unix:///var/run/docker.sock or tcp://HOST:2376")] = "",
    tls_ca: Annotated[str | None, typer.Option(help="CA certificate for a TLS engine")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="client certificate")] = None,
    tls_key: Annotated[str | None, typer.Option(help="client key")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    address: Annotated[str, typer.Option(help="address other nodes reach this one at (distributed jobs); "
                                              "default: the engine URL's host")] = "",
) -> None:
    """Register a Docker engine as a node."""
    labels = dict(item.partition("=")[::2] for item in label or [])
    with api_errors(), client() as c:
        node = c.add_node(name, engine, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, labels=labels,
                          address=address)
    console.print(f"node [bold]{node.name}[/bold] added: {node.cpus:g} CPUs, "
                  f"{human_bytes(node.memory)}, {len(node.gpus)} GPU(s)")


def _status(node: NodeOut) -> str:
    """The status, with ``draining`` added where it is not the status itself (a drained node that is
    unreachable), and the last error."""
    text = str(node.status)
    if node.draining and node.status != NodeStatus.DRAINING:
        text += f", {NodeStatus.DRAINING}"
    return f"{text} ({node.last_error[:60]})" if node.last_error else text


@node_app.command("ls")
def node_ls() -> None:
    """Nodes with capacity, what is allocated on them, and health."""
    with api_errors(), client() as c:
        nodes = c.nodes()
    table = Table("NAME", "STATUS", "CPUS (alloc/total)", "MEMORY (alloc/total)", "GPUS", "ENGINE", "ADDRESS", "SEEN")
    for n in nodes:
        gpus = ", ".join(f"{g.index}:{g.model} {human_bytes(g.memory)}" for g in n.gpus) or "0"
        table.add_row(n.name, _status(n), f"{n.allocated_cpus:g}/{n.cpus:g}",
                      f"{human_bytes(n.allocated_memory)}/{human_bytes(n.memory)}",
                      f"{n.allocated_gpus:g} used of [{gpus}]", n.engine_url or "default", n.address,
                      ago(n.last_seen_at))
    console.print(table)


def _reading(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:g}{unit}"


@node_app.command("gpus")
def node_gpus(name: Annotated[str | None, typer.Argument(help="one node (default: every node)")] = None) -> None:
    """Each GPU: what the node's NVIDIA tools last said it is doing, and the jobs that hold it."""
    with api_errors(), client() as c:
        nodes = [n for n in c.nodes() if name is None or n.name == name]
    if name is not None and not nodes:
        console.print(f"[red]no node {name!r}[/red]")
        raise typer.Exit(1)
    table = Table("NODE", "GPU", "MODEL", "UTIL", "MEMORY (used/total)", "TEMP", "POWER", "HELD BY", "SAMPLED")
    for n in nodes:
        for g in n.gpus:
            used = "-" if g.memory_used is None else human_bytes(g.memory_used)
            held = ", ".join(f"{h.job or '(another project)'}" + (f" ×{h.share:g}" if h.share < 1 else "")
                             for h in g.holders) or "-"
            table.add_row(n.name, str(g.index), g.model, _reading(g.utilization_percent, "%"),
                          f"{used}/{human_bytes(g.memory)}", _reading(g.temperature_c, "°C"),
                          _reading(g.power_w, " W"), held, ago(g.sampled_at) if g.sampled_at else "-")
    if not table.rows:
        console.print("no GPUs" + (f" on node {name}" if name else " on any node"))
        return
    console.print(table)


@node_app.command("drain")
def node_drain(name: str, undo: Annotated[bool, typer.Option("--undo", help="make it schedulable again")] = False) -> None:
    """Stop placing new jobs on a node (running ones continue)."""
    with api_errors(), client() as c:
        c.drain_node(name, undo=undo)
    console.print(f"node {name}: {NodeStatus.READY if undo else NodeStatus.DRAINING}")


@node_app.command("rm")
def node_rm(name: str, force: Annotated[bool, typer.Option(help="even if jobs run there")] = False) -> None:
    """Unregister a node."""
    with api_errors(), client() as c:
        c.remove_node(name, force=force)
    console.print(f"node {name} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
