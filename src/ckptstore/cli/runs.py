"""``ls`` of a folder or bucket prefix holding several stores: one row per store (Determined's experiment list).

The stores come from :func:`ckptstore.stores`; this module only prints them as a table, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from ckptstore._redact import redact_url
from ckptstore.oplog import human
from ckptstore.stores import StoreSummary

from ._app import console, echo, json_out

__all__ = ["print_stores"]

_CSV_COLUMNS = ("name", "checkpoints", "unit", "monitor", "best", "best_value", "last", "size", "last_commit", "error")


def _best(run: StoreSummary) -> str:
    if run.best is None:
        return "-"
    value = f" ({run.monitor}={run.best_value:.4g})" if run.best_value is not None else ""
    return f"{run.unit} {run.best}{value}"


def print_stores(runs: Sequence[StoreSummary], url: str, *, as_json: bool, as_csv: bool) -> None:
    """Print the stores found below ``url``: a table, CSV (``--csv``) or JSON (``--json``)."""
    if as_json:
        json_out([run.to_dict() for run in runs])
        return
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for run in runs:
            data = run.to_dict()
            writer.writerow(["" if data[c] is None else data[c] for c in _CSV_COLUMNS])
        echo(buffer.getvalue().rstrip("\n"))
        return
    table = Table(title=f"{redact_url(url)}: {len(runs)} store(s)", title_justify="left")
    for name, justify in (
        ("store", "left"),
        ("checkpoints", "right"),
        ("best", "left"),
        ("last", "right"),
        ("size", "right"),
        ("last commit (UTC)", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for run in runs:
        if run.error is not None:
            table.add_row(escape(run.name), "-", f"[red]unreadable:[/] {escape(run.error)}", "-", "-", "-")
            continue
        table.add_row(
            escape(run.name),
            str(run.checkpoints),
            escape(_best(run)),
            "-" if run.last is None else f"{run.unit} {run.last}",
            human(run.size),
            run.last_commit.strftime("%Y-%m-%d %H:%M:%S") if run.last_commit is not None else "-",
        )
    console.print(table)
    console.print(f"[dim]one store in detail: ckptstore ls {escape(redact_url(url))}/NAME[/]", highlight=False)
