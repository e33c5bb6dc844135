"""What every command shares: the click group, its state, the exit statuses, output and argument helpers.

The command modules of :mod:`ckptstore.cli` register themselves on :data:`cli` and use only what is
here, so an error becomes the same one line and exit status, and ``--option``, ``--json`` and the
best/last/pinned marks mean the same thing, whichever command runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

import ckptstore
from ckptstore._redact import redact, scrub_exception
from ckptstore.errors import (
    BackendAuthError,
    BackendUnavailableError,
    CheckpointNotFoundError,
    CkptStoreError,
    InvalidArgumentError,
    StoreNotFoundError,
    VerificationError,
)
from ckptstore.store import CheckpointStore

__all__ = [
    "EXIT_CODES",
    "EXIT_MEANINGS",
    "State",
    "cli",
    "console",
    "epoch_argument",
    "err_console",
    "json_option",
    "json_out",
    "main",
    "marks_of",
    "parse_value",
    "pass_state",
    "split_pair",
    "storage_options",
]

_EXIT_STATUSES = (
    (0, "ok", "success"),
    (1, "verification", "a checkpoint failed verification (the message names the file)"),
    (2, "usage", "bad usage or an invalid argument"),
    (3, "not_found", "not found: no store, no such checkpoint, no file matching the pattern"),
    (4, "backend", "the backend refused: credentials, a missing package, an unreachable server"),
    (5, "other", "any other ckptstore error (a conflict, a failed write)"),
)
EXIT_CODES = {name: code for code, name, _ in _EXIT_STATUSES}
"""The exit status by what went wrong."""
EXIT_MEANINGS = {code: meaning for code, _, meaning in _EXIT_STATUSES}
"""What each exit status means, as the reference page says it."""

console = Console()
err_console = Console(stderr=True)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, VerificationError):
        return EXIT_CODES["verification"]
    if isinstance(exc, (CheckpointNotFoundError, StoreNotFoundError)):
        return EXIT_CODES["not_found"]
    if isinstance(exc, InvalidArgumentError):
        return EXIT_CODES["usage"]
    if isinstance(exc, (BackendAuthError, BackendUnavailableError, OSError)):
        return EXIT_CODES["backend"]
    return EXIT_CODES["other"]


# -- options -------------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """``text`` read as JSON, or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_pair(pair: str, flag: str) -> tuple[str, str]:
    """``key=value`` split at the first ``=``; ``flag`` names the option in the error."""
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise InvalidArgumentError(f"{flag} takes key=value, got {pair!r}")
    return key, value


def storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``CKPTSTORE_STORAGE_OPTIONS`` (JSON) updated by ``key=value`` pairs (dotted keys nest, values JSON or text)."""
    options: dict[str, Any] = {}
    env = os.environ.get("CKPTSTORE_STORAGE_OPTIONS")
    if env:
        loaded = parse_value(env)
        if not isinstance(loaded, dict):
            raise InvalidArgumentError("CKPTSTORE_STORAGE_OPTIONS must be a JSON object")
        options.update(loaded)
    for pair in pairs:
        key, value = split_pair(pair, "--option")
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise InvalidArgumentError(f"--option {key}: {parent!r} is not a mapping")
        target[leaf] = parse_value(value)
    return options


class State:
    """The group's options, handed to every command."""

    def __init__(self, options: Sequence[str], debug: bool) -> None:
        self.option_pairs = list(options)
        self.debug = debug

    def options(self) -> dict[str, Any] | None:
        """The storage options, or None when there are none."""
        return storage_options(self.option_pairs) or None

    def open(self, url: str, **config: Any) -> CheckpointStore:
        """Open an existing store with the monitor and mode it recorded (``--monitor`` ranks, it does not rebind)."""
        return ckptstore.open(url, create=False, storage_options=self.options(), **config)


pass_state = click.make_pass_decorator(State)


class _Group(click.Group):
    """Turns ckptstore errors into one line and a documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except CkptStoreError as exc:
            state = ctx.find_object(State)
            scrub_exception(exc)  # also what --debug prints: no secret in the message or its causes
            if state is not None and state.debug:
                raise
            err_console.print(f"[bold red]ckptstore: error:[/] {_shown(exc)}", highlight=False, soft_wrap=True)
            ctx.exit(_exit_code(exc))
        except OSError as exc:
            state = ctx.find_object(State)
            scrub_exception(exc)
            if state is not None and state.debug:
                raise
            err_console.print(f"[bold red]ckptstore: backend error:[/] {_shown(exc)}", highlight=False, soft_wrap=True)
            ctx.exit(EXIT_CODES["backend"])


def _shown(exc: BaseException) -> str:
    """The error's message fit for the terminal: secrets redacted, rich markup (``[/path]``) escaped."""
    return escape(redact(str(exc)))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A storage option (repeatable; dotted keys nest; values are JSON or text).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(ckptstore.__version__, prog_name="ckptstore")
@click.pass_context
def cli(ctx: click.Context, options: tuple[str, ...], debug: bool) -> None:
    """Find, compare, annotate, fetch and clean checkpoints in a ckptstore store."""
    ctx.obj = State(options, debug)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="ckptstore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_CODES["usage"]
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    return int(result) if isinstance(result, int) else 0


# -- shared by the commands ------------------------------------------------------------------------------
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
"""The ``--json`` flag of the read commands."""
epoch_argument = click.argument("epoch", type=click.IntRange(min=0))
"""A required EPOCH argument."""


def json_out(data: Any) -> None:
    """Print ``data`` as indented JSON (what ``--json`` shows)."""
    click.echo(json.dumps(data, indent=2, default=str))


def marks_of(store: CheckpointStore) -> Callable[[int], list[str]]:
    """A function from an epoch to its marks: ``best``, ``last``, ``pinned`` (read once, from the store)."""
    marks = store.marks()
    return lambda epoch: marks.get(epoch, [])
