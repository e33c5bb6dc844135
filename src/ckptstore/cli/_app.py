"""What every command shares: the click group, its state, the exit statuses, output and argument helpers.

The command modules of :mod:`ckptstore.cli` register themselves on :data:`cli` and use only what is
here, so an error becomes the same one line and exit status, and ``--storage-option``, ``--timeout``,
``--json``, the checkpoint selector (``best``, ``latest``, an epoch) and the best/last/pinned marks
mean the same thing, whichever command runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import click
from rich.console import Console
from rich.markup import escape

import ckptstore
from ckptstore._redact import redact, scrub_exception
from ckptstore.checkpoint import Checkpoint
from ckptstore.errors import (
    BackendAuthError,
    BackendUnavailableError,
    CheckpointNotFoundError,
    CkptStoreError,
    InvalidArgumentError,
    StoreNotFoundError,
    StoreUnavailableError,
    VerificationError,
)
from ckptstore.retry import RetryPolicy
from ckptstore.store import CheckpointStore
from ckptstore.stores import StoreSummary

from ._terms import cli_terms

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_CODES",
    "EXIT_MEANINGS",
    "SELECTOR",
    "Selector",
    "State",
    "StdoutClosed",
    "check_metric",
    "cli",
    "cli_terms",
    "console",
    "echo",
    "err_console",
    "json_option",
    "json_out",
    "main",
    "marks_of",
    "metric_names",
    "parse_value",
    "pass_state",
    "pick",
    "selector_argument",
    "split_pair",
    "storage_options",
    "store_options",
    "unit_of",
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

DEFAULT_TIMEOUT = 5.0
"""Seconds the command keeps retrying a backend that does not answer (``--timeout``, ``CKPTSTORE_TIMEOUT``)."""


# -- output ----------------------------------------------------------------------------------------------
class StdoutClosed(Exception):
    """The reader of stdout went away (``ckptstore log URL | head -1``): the command stops quietly."""


class _GuardedStdout:
    """The current ``sys.stdout``, with a closed pipe turned into :class:`StdoutClosed` (never an OSError)."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except BrokenPipeError:
            raise StdoutClosed from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise StdoutClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stdout, name)


_STDOUT = cast(IO[str], _GuardedStdout())
console = Console(file=_STDOUT)
err_console = Console(stderr=True)


def echo(text: str) -> None:
    """Print one line of plain text to stdout (a closed pipe stops the command quietly)."""
    click.echo(text, file=_STDOUT)


def json_out(data: Any) -> None:
    """Print ``data`` as indented JSON (what ``--json`` shows)."""
    echo(json.dumps(data, indent=2, default=str))


# -- errors ----------------------------------------------------------------------------------------------
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


def _shown(exc: BaseException, state: State | None) -> str:
    """The error's message fit for the terminal: CLI terms, secrets redacted, rich markup escaped."""
    text = cli_terms(str(exc))
    if isinstance(exc, StoreUnavailableError):
        timeout = state.timeout if state is not None else DEFAULT_TIMEOUT
        text += (
            f" (the command stops retrying after --timeout {timeout:g}s; check the URL and "
            "-S endpoint_url=..., or raise --timeout / CKPTSTORE_TIMEOUT)"
        )
    return escape(redact(text))


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
        key, value = split_pair(pair, "--storage-option")
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise InvalidArgumentError(f"--storage-option {key}: {parent!r} is not a mapping")
        target[leaf] = parse_value(value)
    return options


class State:
    """The group's options (and those given after the command), handed to every command."""

    def __init__(self, options: Sequence[str], debug: bool, timeout: float | None = None) -> None:
        self.option_pairs = list(options)
        self.debug = debug
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout

    def options(self) -> dict[str, Any] | None:
        """The storage options, or None when there are none."""
        return storage_options(self.option_pairs) or None

    def retry(self) -> RetryPolicy:
        """How long a backend that does not answer is retried: until ``--timeout`` (a command is interactive)."""
        return RetryPolicy(deadline=self.timeout, max_backoff=max(self.timeout / 4, 0.2))

    def stores(self, url: str) -> list[StoreSummary]:
        """The stores at or below ``url`` (``ls`` of a folder that is not a store)."""
        return ckptstore.stores(url, self.options(), retry=self.retry())

    def open(self, url: str, **config: Any) -> CheckpointStore:
        """Open an existing store with the monitor and mode it recorded (``--monitor`` ranks, it does not rebind)."""
        return ckptstore.open(url, create=False, storage_options=self.options(), retry=self.retry(), **config)


pass_state = click.make_pass_decorator(State)

_STORAGE_HELP = "A storage option KEY=VALUE (repeatable; dotted keys nest; values are JSON or text)."
_TIMEOUT_HELP = f"Seconds to retry a backend that does not answer (default {DEFAULT_TIMEOUT:g}; env CKPTSTORE_TIMEOUT)."


def _add_pairs(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    state = ctx.find_object(State)
    if state is not None and value:
        state.option_pairs.extend(value)


def _set_timeout(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    state = ctx.find_object(State)
    if state is not None and value is not None:
        state.timeout = value


_TIMEOUT_TYPE = click.FloatRange(min=0, min_open=True)


def store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command ``-S/--storage-option`` and ``--timeout`` (the same as before the command name)."""
    command = click.option(
        "--timeout",
        type=_TIMEOUT_TYPE,
        expose_value=False,
        callback=_set_timeout,
        metavar="SECONDS",
        help=_TIMEOUT_HELP,
    )(command)
    return click.option(
        "-S",
        "--storage-option",
        multiple=True,
        expose_value=False,
        callback=_add_pairs,
        metavar="KEY=VALUE",
        help=_STORAGE_HELP,
    )(command)


class _Group(click.Group):
    """Turns ckptstore errors into one line and a documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        logger = logging.getLogger("ckptstore")
        quiet = logging.NullHandler()  # retry warnings are not lines of the command's output
        logger.addHandler(quiet)
        loud: logging.Handler | None = None
        try:
            if ctx.params.get("debug"):
                loud = logging.StreamHandler(sys.stderr)
                loud.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
                logger.addHandler(loud)
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, StdoutClosed):
            raise
        except CkptStoreError as exc:
            self._fail(ctx, exc, "error", _exit_code(exc))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and _stdout_gone():
                raise StdoutClosed from None
            self._fail(ctx, exc, "backend error", EXIT_CODES["backend"])
        finally:
            logger.removeHandler(quiet)
            if loud is not None:
                logger.removeHandler(loud)

    @staticmethod
    def _fail(ctx: click.Context, exc: Exception, what: str, code: int) -> None:
        state = ctx.find_object(State)
        scrub_exception(exc)  # also what --debug prints: no secret in the message or its causes
        if state is not None and state.debug:
            raise exc
        err_console.print(f"[bold red]ckptstore: {what}:[/] {_shown(exc, state)}", highlight=False, soft_wrap=True)
        ctx.exit(code)


def _stdout_gone() -> bool:
    """Whether writing to stdout fails with a broken pipe (its reader went away)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-S", "--storage-option", "options", multiple=True, metavar="KEY=VALUE", help=_STORAGE_HELP)
@click.option("-o", "--option", "old_options", multiple=True, hidden=True)  # the name before -S; still works
@click.option("--timeout", type=_TIMEOUT_TYPE, envvar="CKPTSTORE_TIMEOUT", metavar="SECONDS", help=_TIMEOUT_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks and log lines instead of one-line errors.")
@click.version_option(ckptstore.__version__, prog_name="ckptstore")
@click.pass_context
def cli(
    ctx: click.Context, options: tuple[str, ...], old_options: tuple[str, ...], timeout: float | None, debug: bool
) -> None:
    """Find, compare, annotate, fetch and clean checkpoints in a ckptstore store."""
    ctx.obj = State([*old_options, *options], debug, timeout)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test runner's buffer): nothing will flush to a pipe
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 when the reader of stdout went away early)."""
    try:
        try:
            result = cli.main(
                args=list(argv) if argv is not None else None, prog_name="ckptstore", standalone_mode=False
            )
        except click.exceptions.Exit as exc:
            result = int(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            result = EXIT_CODES["usage"]
        except click.exceptions.Abort:
            err_console.print("aborted")
            result = 130
        sys.stdout.flush()
    except (StdoutClosed, BrokenPipeError):
        _quiet_stdout()
        return 0
    return int(result) if isinstance(result, int) else 0


# -- shared by the commands ------------------------------------------------------------------------------
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
"""The ``--json`` flag of every command."""

if TYPE_CHECKING:
    _ParamBase = click.ParamType[str | int]  # generic from click 8.2 on
else:
    _ParamBase = click.ParamType

SELECTOR = "best | latest | EPOCH"
"""How a checkpoint is named on the command line, the same for every command."""


class Selector(_ParamBase):
    """A checkpoint: ``best`` (by the store's monitor or ``--metric``), ``latest`` (alias ``last``) or an epoch.

    Args:
        extra: Other words the command accepts (``verify`` takes ``all``).
    """

    name = "WHICH"

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self.words = ("best", "latest", *extra)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | int:
        """A word (``best``, ``latest``, ...) or the epoch as an int."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        text = "latest" if text == "last" else text
        if text in self.words:
            return text
        if text.isdigit():
            return int(text)
        self.fail(f"expected {', '.join(self.words)} or an epoch number, got {value!r}", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        """Complete the words."""
        from click.shell_completion import CompletionItem

        return [CompletionItem(word) for word in self.words if word.startswith(incomplete)]


def selector_argument(
    default: str | None, extra: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The WHICH argument (``best``, ``latest`` or an EPOCH); optional when ``default`` is given."""
    return click.argument("which", type=Selector(extra), required=default is None, default=default, metavar="WHICH")


def pick(store: CheckpointStore, which: str | int, metric: str | None = None) -> Checkpoint:
    """The checkpoint ``which`` names (``best`` by ``metric``, checked to exist, or by the store's monitor)."""
    if metric is not None:
        check_metric(store, metric, "--metric")
    if which == "best":
        if metric is None and store.config.monitor is None:
            raise click.UsageError("best needs --metric NAME: the store records no monitor")
        return store.best(metric)
    if which == "latest":
        return store.latest()
    return store.get(int(which))


def metric_names(checkpoints: Iterable[Checkpoint]) -> list[str]:
    """Every metric some checkpoint records (at save time or by evaluate), sorted."""
    return sorted({name for c in checkpoints for name in c.all_metrics})


def check_metric(store: CheckpointStore, name: str, flag: str, checkpoints: Sequence[Checkpoint] | None = None) -> str:
    """``name`` if the store has that metric; else a usage error naming the metrics it has."""
    known = metric_names(checkpoints if checkpoints is not None else store.list(sort_by="epoch"))
    if name in known or (not known and name == store.config.monitor):
        return name
    have = ", ".join(known) if known else "none (no checkpoint records a metric)"
    raise click.BadParameter(f"the store has no metric {name!r}; its metrics: {have}", param_hint=flag)


def unit_of(checkpoints: Iterable[Checkpoint]) -> str:
    """``step`` when the store numbers its checkpoints by global step (each records step == its number)."""
    listed = list(checkpoints)
    return "step" if listed and all(c.step is not None and c.step == c.epoch for c in listed) else "epoch"


def marks_of(store: CheckpointStore) -> Callable[[int], list[str]]:
    """A function from an epoch to its marks: ``best``, ``last``, ``pinned`` (read once, from the store)."""
    marks = store.marks()
    return lambda epoch: marks.get(epoch, [])
