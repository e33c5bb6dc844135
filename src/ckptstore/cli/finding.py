"""``select`` and ``latest``: find one file by its name in a store or in any directory (Guild, Keras).

Unlike the other commands these also work where there is no ckptstore store: a URL that is not a
store is searched as a plain directory. ``--download`` copies the file found.
"""

from __future__ import annotations

import click

import ckptstore
from ckptstore.errors import CheckpointNotFoundError, StoreNotFoundError
from ckptstore.store import CheckpointStore

from ._app import State, cli, console, json_option, json_out, pass_state, store_options

__all__ = ["latest_command", "select_command"]

_download_option = click.option(
    "--download", "dest", type=click.Path(file_okay=False), help="Copy the file into this directory."
)


def _store_or_none(state: State, url: str) -> CheckpointStore | None:
    try:
        return state.open(url)
    except StoreNotFoundError:
        return None


def _print_match(match: ckptstore.FileMatch, as_json: bool, dest: str | None, rename: str | None) -> None:
    local = match.download(dest, rename=rename) if dest else None
    if as_json:
        json_out(
            {
                "url": match.url,
                "path": match.path,
                "size": match.size,
                "modified": match.modified.isoformat(),
                "value": match.value,
                "epoch": match.epoch,
                "downloaded": str(local) if local else None,
            }
        )
        return
    console.print(match.url, highlight=False)
    if local:
        console.print(f"downloaded to {local}", highlight=False)


@cli.command("select")
@click.argument("url")
@click.argument("regex")
@click.option("--min", "mode", flag_value="min", help="The smallest number in the first group.")
@click.option("--max", "mode", flag_value="max", default=True, help="The largest number (default).")
@_download_option
@click.option("--rename", help="The name of the copy (Guild's rename).")
@json_option
@store_options
@pass_state
def select_command(
    state: State, url: str, regex: str, mode: str, dest: str | None, rename: str | None, as_json: bool
) -> None:
    r"""Guild's select-min/select-max over file names in a store or any directory.

    REGEX must match a file's whole name (or its whole path below URL), as in Guild: 'weights.(\d+)'
    does not match 'weights.12.hdf5'; write 'weights.(\d+).hdf5' or '.*?(\d+).*'. Its first group is
    read as the number; --max (the default) picks the largest, --min the smallest.
    """
    store = _store_or_none(state, url)
    try:
        if store is not None:
            match = store.select_min(regex) if mode == "min" else store.select_max(regex)
        else:
            select = ckptstore.select_min if mode == "min" else ckptstore.select_max
            match = select(url, regex, storage_options=state.options())
    except CheckpointNotFoundError as exc:
        raise CheckpointNotFoundError(f"{exc} (the regex must match the whole file name)") from None
    _print_match(match, as_json, dest, rename)


@cli.command("latest")
@click.argument("url")
@click.argument("pattern")
@_download_option
@click.option("--rename", help="The name of the copy.")
@json_option
@store_options
@pass_state
def latest_command(state: State, url: str, pattern: str, dest: str | None, rename: str | None, as_json: bool) -> None:
    """The newest file matching PATTERN (Keras template, glob, or re:REGEX) in a store or directory."""
    store = _store_or_none(state, url)
    if store is not None:
        match = store.resolve_latest(pattern)
    else:
        match = ckptstore.resolve_latest(url, pattern, storage_options=state.options())
    _print_match(match, as_json, dest, rename)
