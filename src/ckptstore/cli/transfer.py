"""``download``: copy checkpoints out of a store, verified while reading, with a progress bar.

The only command that moves whole checkpoints, and the only one with a progress display (on stderr,
so ``--json`` on stdout stays clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from ._app import State, cli, console, err_console, json_option, json_out, pass_state

__all__ = ["download_command"]


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int, str], None] | bool]:
    if not enabled:
        yield False
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err_console
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(done: int, total: int, description: str) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done)

        yield update


@cli.command("download")
@click.argument("url")
@click.option("--best", "pick", flag_value="best", help="The best checkpoint (the default).")
@click.option("--latest", "pick", flag_value="latest", help="The latest checkpoint.")
@click.option("--epoch", type=click.IntRange(min=0), help="This epoch.")
@click.option("--top-n", type=click.IntRange(min=1), help="The best N checkpoints.")
@click.option("--metric", help="The metric for --best and --top-n (default: the monitor).")
@click.option("--output-dir", type=click.Path(file_okay=False), default="checkpoints", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@json_option
@pass_state
def download_command(
    state: State,
    url: str,
    pick: str | None,
    epoch: int | None,
    top_n: int | None,
    metric: str | None,
    output_dir: str,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Download checkpoints into OUTPUT_DIR/<epoch>/, verified while reading."""
    store = state.open(url)
    which: Any = epoch if epoch is not None else (pick or "best")
    show = sys.stderr.isatty() if progress is None else progress
    with _progress_bar(show) as bar:
        paths = store.download(output_dir, which, top_n=top_n, metric=metric, progress=bar)
    if as_json:
        json_out([str(p) for p in paths])
        return
    for path in paths:
        console.print(f"Local checkpoint path: {path}", highlight=False)
