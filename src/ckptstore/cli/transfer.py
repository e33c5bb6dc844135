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

from ._app import (
    Selector,
    State,
    check_metric,
    cli,
    console,
    err_console,
    json_option,
    json_out,
    pass_state,
    store_options,
)

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
@click.argument("which", type=Selector(), required=False, metavar="[WHICH]")
@click.option("--best", "flags", flag_value="best", multiple=True, help="The best checkpoint (the default).")
@click.option("--latest", "flags", flag_value="latest", multiple=True, help="The latest checkpoint.")
@click.option("--epoch", type=click.IntRange(min=0), help="This epoch (the same as WHICH=EPOCH).")
@click.option("--top-n", type=click.IntRange(min=1), help="The best N checkpoints (by --metric or the monitor).")
@click.option("--metric", help="The metric for best and --top-n (default: the store's monitor).")
@click.option("--output-dir", type=click.Path(file_okay=False), default="checkpoints", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@json_option
@store_options
@pass_state
def download_command(
    state: State,
    url: str,
    which: str | int | None,
    flags: tuple[str, ...],
    epoch: int | None,
    top_n: int | None,
    metric: str | None,
    output_dir: str,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Download checkpoints into OUTPUT_DIR/<epoch>/, verified while reading.

    WHICH is best (the default), latest or an EPOCH; --best, --latest and --epoch N say the same.
    Name one checkpoint once: two different choices are a usage error.
    """
    chosen = {*flags, *([which] if which is not None else []), *([epoch] if epoch is not None else [])}
    if len(chosen) > 1:
        raise click.UsageError(f"download one checkpoint: got {', '.join(map(str, sorted(chosen, key=str)))}")
    pick = chosen.pop() if chosen else "best"
    if top_n is not None and pick != "best":
        raise click.UsageError(f"--top-n downloads the best N: it cannot be combined with {pick}")
    store = state.open(url)
    if metric is not None:
        check_metric(store, metric, "--metric")
    elif pick == "best" and store.config.monitor is None:
        raise click.UsageError("best needs --metric NAME: the store records no monitor")
    show = sys.stderr.isatty() if progress is None else progress
    with _progress_bar(show) as bar:
        paths = store.download(output_dir, pick, top_n=top_n, metric=metric, progress=bar)  # type: ignore[arg-type]
    if as_json:
        json_out([str(p) for p in paths])
        return
    for path in paths:
        console.print(f"Local checkpoint path: {path}", highlight=False)
