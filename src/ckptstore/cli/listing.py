"""The read-only views of a store: ``ls`` (every checkpoint), ``show`` (one checkpoint) and ``log``.

They only read: each opens the store, asks it, and prints a table or, with ``--json``, the same data.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ckptstore._redact import redact_url
from ckptstore.checkpoint import Checkpoint
from ckptstore.errors import InvalidArgumentError
from ckptstore.oplog import human
from ckptstore.store import CheckpointStore

from ._app import State, cli, console, json_option, json_out, marks_of, pass_state

__all__ = ["log_command", "ls_command", "show_command"]


def _which(store: CheckpointStore, which: str, metric: str | None = None) -> Checkpoint:
    if which == "best":
        return store.best(metric)
    if which in ("latest", "last"):
        return store.latest()
    try:
        epoch = int(which)
    except ValueError:
        raise InvalidArgumentError(f"expected best, latest or an epoch number, got {which!r}") from None
    return store.get(epoch)


def _row(c: Checkpoint, marks: list[str]) -> dict[str, Any]:
    return {
        "epoch": c.epoch,
        "committed_at": c.committed_at.isoformat(),
        "size": c.size,
        "metrics": c.all_metrics,
        "marks": marks,
        "run_id": c.run_id,
        "url": c.url,
    }


@cli.command("ls")
@click.argument("url")
@click.option("--sort-by", help="epoch, time, or a metric (default: the monitor, best first).")
@click.option("--order", type=click.Choice(["asc", "desc"]), help="Default: best first for a metric.")
@click.option("--top-n", type=click.IntRange(min=0), help="Show only the first N.")
@click.option("--monitor", help="The metric that defines best (default: the one the store recorded).")
@click.option("--mode", type=click.Choice(["min", "max", "auto"]), help="Whether smaller or larger is better.")
@json_option
@pass_state
def ls_command(
    state: State,
    url: str,
    sort_by: str | None,
    order: str | None,
    top_n: int | None,
    monitor: str | None,
    mode: str | None,
    as_json: bool,
) -> None:
    """List checkpoints with time, size, metrics and best/last/pinned marks (like Determined)."""
    store = state.open(url)
    if sort_by is None and monitor is not None:  # rank by another metric than the store's monitor
        sort_by = monitor
        if order is None and mode in ("min", "max"):
            order = "asc" if mode == "min" else "desc"
    checkpoints = store.list(sort_by=sort_by, order=order, limit=top_n)  # type: ignore[arg-type]
    marks = marks_of(store)
    if as_json:
        json_out([_row(c, marks(c.epoch)) for c in checkpoints])
        return
    metric_names = sorted({m for c in checkpoints for m in c.all_metrics})
    table = Table(title=f"{store.url}: {len(checkpoints)} checkpoint(s)", title_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("committed (UTC)")
    table.add_column("size", justify="right")
    for name in metric_names:
        table.add_column(name, justify="right")
    table.add_column("marks")
    for c in checkpoints:
        table.add_row(
            str(c.epoch),
            c.committed_at.strftime("%Y-%m-%d %H:%M:%S"),
            human(c.size),
            *(f"{c.all_metrics[m]:.4f}" if m in c.all_metrics else "-" for m in metric_names),
            ",".join(marks(c.epoch)),
        )
    console.print(table)
    console.print(f"[dim]see the curve: ckptstore plot {escape(redact_url(url))}[/]", highlight=False)


@cli.command("show")
@click.argument("url")
@click.argument("which", default="latest")
@click.option("--monitor", help="The metric that defines best.")
@json_option
@pass_state
def show_command(state: State, url: str, which: str, monitor: str | None, as_json: bool) -> None:
    """Show one checkpoint (best, latest or an EPOCH): manifest, files, metadata."""
    store = state.open(url)
    c = _which(store, which, monitor)
    info = dict(c.info())
    info["marks"] = marks_of(store)(c.epoch)
    info["manifest"] = c.manifest.to_dict()
    if as_json:
        json_out(info)
        return
    console.print(f"[bold]epoch {c.epoch}[/] {' '.join(info['marks'])}  {c.url}", highlight=False)
    console.print(f"committed {c.committed_at.isoformat()}  run {c.run_id}  parent {c.parent}  size {human(c.size)}")
    if c.manifest.serializer:
        console.print(f"serializer {c.manifest.serializer}")
    console.print(f"metrics {json.dumps(c.all_metrics)}")
    console.print(f"metadata {json.dumps(c.metadata)}")
    files = Table("file", "size", "xxh3-128")
    for path, entry in sorted(c.files.items()):
        files.add_row(path, human(entry.size), entry.xxh3_128)
    console.print(files)
    console.print(f"[dim]see where it sits: ckptstore plot {escape(redact_url(url))}[/]", highlight=False)


@cli.command("log")
@click.argument("url")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
@json_option
@pass_state
def log_command(state: State, url: str, tail: int | None, as_json: bool) -> None:
    """Print the store's log (ckpt.log, or the log/ objects of an object store)."""
    lines = state.open(url).log()
    if tail:
        lines = lines[-tail:]
    if as_json:
        json_out(lines)
        return
    for line in lines:
        click.echo(line)
