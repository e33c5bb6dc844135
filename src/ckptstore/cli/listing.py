"""The read-only views of a store: ``ls`` (every checkpoint, or every store below a folder), ``show`` and ``log``.

They only read: each opens the store, asks it, and prints a table or, with ``--json`` (or ``ls
--csv``), the same data. ``ls`` of a folder or bucket prefix that is not a store lists the stores
below it (:mod:`.runs`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ckptstore._redact import redact_url
from ckptstore.checkpoint import Checkpoint
from ckptstore.errors import StoreNotFoundError
from ckptstore.oplog import human

from ._app import (
    State,
    check_metric,
    cli,
    console,
    echo,
    json_option,
    json_out,
    marks_of,
    metric_names,
    pass_state,
    pick,
    selector_argument,
    store_options,
    unit_of,
)
from .runs import print_stores

__all__ = ["log_command", "ls_command", "parse_log_line", "show_command"]

_FIXED = ("epoch", "committed", "size", "marks", "run")
_ALIASES = {"step": "epoch", "time": "committed"}


def _row(c: Checkpoint, marks: list[str]) -> dict[str, Any]:
    return {
        "epoch": c.epoch,
        "step": c.step,
        "committed_at": c.committed_at.isoformat(),
        "size": c.size,
        "metrics": c.all_metrics,
        "marks": marks,
        "run_id": c.run_id,
        "url": c.url,
    }


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _columns(columns: str | None, metrics: str | None, known: list[str]) -> list[str]:
    """The columns ``ls`` shows: ``--columns``, or the fixed ones around ``--metrics`` (default: every metric)."""
    if columns is not None and metrics is not None:
        raise click.UsageError("give --columns or --metrics, not both")
    if columns is None:
        chosen = _split(metrics) if metrics is not None else known
        unknown = [m for m in chosen if m not in known]
        if unknown:
            have = ", ".join(known) or "none"
            raise click.BadParameter(
                f"no metric {', '.join(map(repr, unknown))}; its metrics: {have}", param_hint="--metrics"
            )
        return ["epoch", "committed", "size", *chosen, "marks"]
    chosen = [_ALIASES.get(c, c) for c in _split(columns)]
    unknown = [c for c in chosen if c not in _FIXED and c not in known]
    if unknown or not chosen:
        have = ", ".join([*_FIXED, *known])
        raise click.BadParameter(
            f"no column {', '.join(map(repr, unknown)) or 'given'}; the columns: {have}", param_hint="--columns"
        )
    return chosen


def _cell(c: Checkpoint, column: str, marks: list[str], raw: bool) -> str:
    if column == "epoch":
        return str(c.epoch)
    if column == "committed":
        return c.committed_at.isoformat() if raw else c.committed_at.strftime("%Y-%m-%d %H:%M:%S")
    if column == "size":
        return str(c.size) if raw else human(c.size)
    if column == "marks":
        return " ".join(marks) if raw else ",".join(marks)
    if column == "run":
        return c.run_id
    value = c.all_metrics.get(column)
    if value is None:
        return "" if raw else "-"
    return repr(value) if raw else f"{value:.4f}"


def _header(column: str, unit: str) -> str:
    return {"epoch": unit, "committed": "committed (UTC)", "run": "run"}.get(column, column)


@cli.command("ls")
@click.argument("url")
@click.option("--sort-by", help="epoch (or step), time, or a metric (default: the monitor, best first).")
@click.option("--order", type=click.Choice(["asc", "desc"]), help="Default: best first for a metric, else ascending.")
@click.option("--top-n", type=click.IntRange(min=0), help="Show only the first N.")
@click.option("--monitor", help="Rank by this metric instead of the store's monitor (as --sort-by).")
@click.option(
    "--mode", type=click.Choice(["min", "max", "auto"]), help="Whether smaller or larger --monitor is better."
)
@click.option("--columns", metavar="A,B,..", help="Columns in order: epoch, committed, size, marks, run, metrics.")
@click.option("--metrics", metavar="A,B,..", help="Only these metric columns (default: every metric).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: the chosen columns, raw values.")
@json_option
@store_options
@pass_state
def ls_command(
    state: State,
    url: str,
    sort_by: str | None,
    order: str | None,
    top_n: int | None,
    monitor: str | None,
    mode: str | None,
    columns: str | None,
    metrics: str | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """List checkpoints (time, size, metrics, marks), or the stores below a folder.

    A URL that is not a store but holds stores below it (runs/, s3://bucket/sweep) lists those
    stores instead: name, checkpoints, best and its value, last, size, last commit. --json prints
    every field whatever --columns says.
    """
    if as_csv and as_json:
        raise click.UsageError("give --csv or --json, not both")
    try:
        store = state.open(url)
    except StoreNotFoundError as missing:
        try:
            runs = state.stores(url)
        except StoreNotFoundError:
            runs = []
        if not runs:
            raise StoreNotFoundError(f"{missing}; and no store below it") from None
        print_stores(runs, url, as_json=as_json, as_csv=as_csv)
        return
    if sort_by == "step":
        sort_by = "epoch"
    if sort_by is None and monitor is not None:  # rank by another metric than the store's monitor
        sort_by = monitor
        if order is None and mode in ("min", "max"):
            order = "asc" if mode == "min" else "desc"
    # With --top-n the store reads only what it shows; the whole store is listed only to name the
    # metrics it has when a metric asked for is in none of the rows shown.
    shown = store.list(sort_by=sort_by, order=order, limit=top_n)  # type: ignore[arg-type]
    everything = shown if top_n is None else None
    if sort_by is not None and sort_by not in ("epoch", "time") and sort_by not in metric_names(shown):
        check_metric(store, sort_by, "--monitor" if monitor == sort_by else "--sort-by", everything)
    try:
        chosen = _columns(columns, metrics, metric_names(shown))
    except click.BadParameter:
        if everything is not None:
            raise
        chosen = _columns(columns, metrics, metric_names(store.list(sort_by="epoch")))
    marks = marks_of(store)
    if as_json:
        json_out([_row(c, marks(c.epoch)) for c in shown])
        return
    unit = unit_of(shown)
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([unit if c == "epoch" else c for c in chosen])
        writer.writerows([_cell(c, col, marks(c.epoch), raw=True) for col in chosen] for c in shown)
        echo(buffer.getvalue().rstrip("\n"))
        return
    table = Table(title=f"{store.url}: {len(shown)} checkpoint(s)", title_justify="left")
    for column in chosen:
        table.add_column(
            _header(column, unit), justify="right" if column not in ("committed", "marks", "run") else "left"
        )
    for c in shown:
        table.add_row(*(_cell(c, column, marks(c.epoch), raw=False) for column in chosen))
    console.print(table)
    console.print(f"[dim]see the curve: ckptstore plot {escape(redact_url(url))}[/]", highlight=False)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _pairs(rows: Sequence[tuple[str, str]], indent: str = "") -> None:
    """Print ``key  value`` lines, the values aligned."""
    width = max((len(key) for key, _ in rows), default=0)
    for key, value in rows:
        echo(f"{indent}{key:<{width}}  {value}")


@cli.command("show")
@click.argument("url")
@selector_argument(default="latest")
@click.option("--metric", "--monitor", "metric", help="The metric that ranks best (default: the store's monitor).")
@json_option
@store_options
@pass_state
def show_command(state: State, url: str, which: str | int, metric: str | None, as_json: bool) -> None:
    """Show one checkpoint: where, when, which run, metrics, metadata, files.

    WHICH is best, latest or an EPOCH (default: latest).
    """
    store = state.open(url)
    c = pick(store, which, metric)
    marks = marks_of(store)(c.epoch)
    if as_json:
        info = dict(c.info())
        info.update(marks=marks, step=c.step, parent=c.parent, manifest=c.manifest.to_dict())
        json_out(info)
        return
    unit = unit_of([c])
    echo(f"{unit} {c.epoch}  {' '.join(marks)}".rstrip())
    rows = [("url", c.url), ("committed", f"{c.committed_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"), ("run", c.run_id)]
    if c.parent is not None:
        rows.append(("resumed from", f"{unit} {c.parent}"))
    if c.step is not None and unit != "step":
        rows.append(("global step", str(c.step)))
    if c.batch is not None:
        rows.append(("batch", str(c.batch)))
    rows.append(("size", f"{human(c.size)} in {len(c.files)} file(s)"))
    if c.manifest.serializer:
        serializer = dict(c.manifest.serializer)
        name = serializer.pop("name", "?")
        rows.append(("serializer", " ".join([name, *(f"{k} {v}" for k, v in sorted(serializer.items()))])))
    _pairs(rows)
    for title, values in (("metrics", c.all_metrics), ("metadata", c.metadata)):
        echo(title if values else f"{title}  (none)")
        _pairs([(k, _value(v)) for k, v in sorted(values.items())], indent="  ")
    files = Table("file", "size", "xxh3-128", title="files", title_justify="left")
    for path, entry in sorted(c.files.items()):
        files.add_row(escape(path), human(entry.size), entry.xxh3_128)
    console.print(files)
    console.print(f"[dim]see where it sits: ckptstore plot {escape(redact_url(url))}[/]", highlight=False)


_LOG_LINE = re.compile(r"^(?P<time>\S+) (?P<host>\S+):(?P<pid>\d+) (?P<event>\S+) ?(?P<message>.*)$")


def parse_log_line(line: str) -> dict[str, Any]:
    """One log line as a record: time, host, pid, event, message (a line of another shape: its message only)."""
    match = _LOG_LINE.match(line)
    if match is None:
        return {"time": None, "host": None, "pid": None, "event": None, "message": line}
    return {
        "time": match["time"],
        "host": match["host"],
        "pid": int(match["pid"]),
        "event": match["event"],
        "message": match["message"].strip(),
    }


@cli.command("log")
@click.argument("url")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
@json_option
@store_options
@pass_state
def log_command(state: State, url: str, tail: int | None, as_json: bool) -> None:
    """Print the store's log (ckpt.log, or the log/ objects of an object store).

    --json prints records: time, host, pid, event, message.
    """
    lines = state.open(url).log()
    if tail:
        lines = lines[-tail:]
    if as_json:
        json_out([parse_log_line(line) for line in lines])
        return
    for line in lines:
        echo(line)
